"""DDPM on CIFAR-10: the network, schedule and optimiser of the paper.

Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020
(arXiv:2006.11239), and the authors' code (hojonathanho/diffusion,
scripts/run_cifar.py):
- Network (Appendix B): the U-Net of imgen/models/unet.py with channels 128,
  multipliers (1, 2, 2, 2) over 32, 16, 8 and 4 pixels, two residual blocks
  per resolution, self-attention at 16x16, dropout 0.1: 35,746,307
  parameters, the paper's "35.7M" (tests/test_ddpm_paper.py counts them by hand).
- Process: T = 1000, betas linear from 1e-4 to 0.02 (Sec. 4), epsilon
  prediction with the simple loss (Eq. 14), reverse variances beta_t
  ('fixedlarge' in run_cifar.py), random horizontal flips.
- Optimiser: Adam 2e-4, batch 128, warm-up over 5,000 steps, gradient
  clipping at norm 1, EMA 0.9999 (Appendix B), 800K steps (Appendix B,
  "CIFAR10 ... 800k steps").
- Published (Table 1, "Ours (L_simple)", CIFAR-10 unconditional): Inception
  Score 9.46 +- 0.11, FID 3.17 (50,000 samples against the training set),
  NLL <= 3.75 bits/dim on the test set (3.72 on train).

Samples here use the ancestral sampler over all 1,000 steps, as the paper.

  python main.py --config=configs/ddpm_cifar10.py --config.data.name=cifar10 \
    --config.eval.inception_weights=/path/to/pt_inception-2015-12-05-6726825d.pth

CIFAR-10 must be prepared in --config.data.data_dir (TFDS downloads nothing
here); the FID/IS need the Inception weights file (imgen downloads nothing).
Not run here: neither is available on this machine. The tests count its
parameters and run a few steps of a shrunk copy on a CIFAR-shaped mock.
"""

import ml_collections

from configs import common
from configs import diffusion


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = diffusion.get_config()
  config.data = common.data(name="cifar10")
  config.model.update(
    image_size=32,
    channels=128,
    channel_mults=(1, 2, 2, 2),
    num_res_blocks=2,
    attention_resolutions=(16,),
    dropout=0.1,
    norm_groups=32,
  )
  config.diffusion.update(objective="ddpm", schedule="linear", num_steps=1000, prediction="epsilon")
  config.diffusion.update(min_snr_gamma=0.0, variance="large", random_flip=True)
  config.sample.update(sampler="ddpm")
  config.inpaint.reconstruction = 0.0  # RePaint only (issue 14); flow's default guides.
  config.optim = common.optimizer(2e-4, warmup_steps=5_000, clip_norm=1.0, ema_decay=0.9999)
  config.train = common.train(num_steps=800_000, checkpoint_every=10_000, batch_size=128)
  config.train.steps_per_dispatch = 10  # The same steps; on CPU 0.94 -> 1.06 steps/s at batch 8.
  config.eval = common.evaluation(
    every_steps=50_000, sample_every=10_000, batch_size=500, metrics="fid,is"
  )
  config.eval.update(num_samples=50_000, feature_network="inception", reference_split="train")
  config.eval.vb_timesteps = 1000  # The whole bound, every level (Ho et al. evaluate it so).
  if arg == "smoke":
    diffusion.shrink_for_smoke(config)
    config.model.update(channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(16,))
    config.sample.update(sampler="ddim")
    config.eval.vb_timesteps = 3
  elif arg:
    raise common.unknown_variant(arg, "configs/ddpm_cifar10.py")
  return config
