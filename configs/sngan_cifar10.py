"""SNGAN on CIFAR-10: the ResNet with spectral normalisation and the hinge loss.

Miyato, Kataoka, Koyama & Yoshida, "Spectral Normalization for Generative
Adversarial Networks", ICLR 2018 (arXiv:1802.05957):
- Network: Appendix B.4, Table 4 (CIFAR-10 ResNet): z in R^128 ~ N(0, I);
  G: dense -> 4x4x256, three ResBlock up 256, BN, ReLU, 3x3 conv 3, tanh;
  D: ResBlock down 128, ResBlock down 128, ResBlock 128, ResBlock 128, ReLU,
  global sum pooling, dense -> 1; spectral normalisation on every layer of D.
  Block internals and initialisation from the authors' code
  (pfnet-research/sngan_projection; see imgen/models/resnet_gan.py).
  G 4,276,739 and D 1,053,824 parameters (tests/test_gan_papers.py counts them
  from Table 4 by hand).
- Loss: hinge, Section 4, Eqs. 16-17.
- Optimiser: Appendix B.2 for the ResNet: Adam alpha 2e-4, beta1 0, beta2 0.9,
  n_dis 5 ("the WGAN-GP settings"); 100K generator updates (Section 4.1);
  batch 64 and the linear decay of the rate to 0 from the authors' released
  config (configs/sn_cifar10_unconditional.yml) and WGAN-GP's Appendix F
  (the paper's text names neither).
- Published (Table 2, "SN-GANs" with the ResNet, CIFAR-10): Inception Score
  8.22 +- .05, FID 21.7 +- .21 (the +- over models of different seeds).

Differences here: G's update reuses the last critic step's 64 fakes (the
released code draws 128); BatchNorm epsilon 1e-5 (Chainer's 2e-5).

  python main.py --config=configs/sngan_cifar10.py --config.data.name=cifar10 \
    --config.eval.inception_weights=/path/to/pt_inception-2015-12-05-6726825d.pth

CIFAR-10 must be prepared in --config.data.data_dir (TFDS downloads nothing
here); the FID/IS need the Inception weights file (imgen downloads nothing).
Not run here: neither is available on this machine. The tests run it for a
few steps on a CIFAR-shaped mock and check its layers against Table 4.
"""

import ml_collections

from configs import common
from configs import gan


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = gan.get_config()
  config.data = common.data(name="cifar10")
  config.model.update(
    name="resnet",
    image_size=32,
    latent_dim=128,
    spectral_norm=True,
    g_channels=(256, 256, 256, 256),
    d_channels=(128, 128, 128, 128),
    d_downsample=(True, True, False, False),
    d_pool="sum",
  )
  config.objective.update(loss="hinge", n_dis=5)
  paper_optimizers(config)
  config.train = common.train(num_steps=100_000, checkpoint_every=5_000, batch_size=64)
  paper_evaluation(config)
  return finish(config, arg, "configs/sngan_cifar10.py")


def paper_optimizers(config: ml_collections.ConfigDict) -> None:
  """Adam 2e-4, betas (0, 0.9), decayed linearly to 0 (SNGAN, WGAN-GP)."""
  for name in ("g", "d"):
    config.optim[name] = common.optimizer(2e-4, b1=0.0, b2=0.9, schedule="linear")


def paper_evaluation(config: ml_collections.ConfigDict) -> None:
  """IS and FID of 5,000 samples in the FID Inception's features, every 5,000 steps."""
  config.eval = common.evaluation(
    every_steps=5_000, sample_every=1_000, batch_size=500, metrics="fid,is"
  )
  config.eval.update(num_samples=5_000, feature_network="inception")


def finish(config: ml_collections.ConfigDict, arg: str | None, path: str):
  """The config, or with 'smoke' a few tiny steps on whatever data the tests give."""
  if arg == "smoke":
    gan.shrink_for_smoke(config)
    config.objective.n_dis = 2
  elif arg:
    raise common.unknown_variant(arg, path)
  return config
