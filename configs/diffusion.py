"""Flow matching on the embedded MNIST digits (offline), sampled by a stochastic
DDIM over 40 noise levels.

  python main.py --config=configs/diffusion.py --workdir=runs/diffusion
  python main.py --config=configs/diffusion.py --workdir=runs/diffusion --mode=sample
  python main.py --config=configs/diffusion.py --workdir=runs/diffusion --mode=inpaint
  python main.py --config=configs/diffusion.py --workdir=runs/diffusion \
    --config.diffusion.objective=edm --config.sample.sampler=heun --config.sample.steps=18
  python main.py --config=configs/diffusion.py:smoke                 # seconds, for tests

Default (chosen by FID at equal images seen, docs/diffusion.md): flow matching with
logit-normal times on DDPM's U-Net at 28x28 with 16 channels, multipliers (1, 2, 4)
over 28, 14 and 7 pixels, one residual block per resolution, attention at 7x7; Adam 2e-3
with 100 warm-up steps and cosine decay, clipping at 1, EMA 0.995; batch 64, 2,600
steps (166,400 images); samples by DDIM with eta 1 over 40 levels of the rho = 5
schedule from sigma 20 (40 network evaluations). Inpainting adds reconstruction
guidance (weight 4) to RePaint's resampling (5).
"""

import ml_collections

from configs import common


def diffusion_group(**overrides) -> ml_collections.ConfigDict:
  """The objective and its settings (imgen/methods/objectives.py)."""
  group = ml_collections.ConfigDict(
    dict(
      objective="flow",  # 'flow' (matching), 'edm' (Karras et al. 2022) or 'ddpm' (Ho et al.).
      # DDPM:
      schedule="linear",  # 'linear' (1e-4 .. 0.02, Ho et al.) or 'cosine' (Nichol & Dhariwal).
      num_steps=1000,  # T.
      prediction="epsilon",  # Or 'v'.
      variance="small",  # Reverse variances: 'small' (posterior beta~) or 'large' (beta).
      min_snr_gamma=0.0,  # > 0: Min-SNR-gamma loss weights (Hang et al. 2023; they use 5).
      # EDM (Karras et al. 2022, Table 1) and the sampling range of EDM and flow:
      sigma_data=0.5,
      p_mean=-1.2,
      p_std=1.2,
      sigma_min=0.002,
      sigma_max=80.0,
      # Flow matching: logit(t) ~ N(t_mean, t_std^2) (Esser et al. 2024).
      t_mean=0.0,
      t_std=1.0,
      label_dropout=0.1,  # Conditional models: P(label -> "none"), for guidance.
      random_flip=False,  # Flip each training image left-right with probability 1/2.
      # > 0: the loss weighs the pixels of the batch's `mask` (grown by a pixel) 1 + this.
      foreground_weight=0.0,
    )
  )
  group.update(overrides)
  return group


def sampler_group(**overrides) -> ml_collections.ConfigDict:
  """How samples are drawn: the grids, the metrics and --mode=sample (imgen/methods/samplers.py)."""
  group = ml_collections.ConfigDict(
    dict(
      sampler="ddim",  # 'ddim', 'euler', 'heun', 'edm', 'dpmpp_2m'; 'ddpm' (ancestral, DDPM only).
      steps=40,  # Levels (heun and edm: 2 steps - 1 network evaluations).
      schedule="auto",  # 'levels' (DDPM's), 'karras' (rho), 'uniform_t'; auto: levels for DDPM.
      rho=7.0,  # Of the karras schedule.
      eta=1.0,  # DDIM noise: 0 deterministic (Euler), 1 ancestral-like (docs/diffusion.md).
      s_churn=0.0,  # The edm sampler's noise (Karras et al. Algorithm 2).
      s_tmin=0.0,
      s_tmax=float("inf"),
      s_noise=1.0,
      guidance_scale=1.0,  # Conditional models: 0 unconditional, 1 conditional, > 1 guided.
      clip=True,  # Clip each predicted x_0 to [-1, 1].
    )
  )
  group.update(overrides)
  return group


def inpaint_group(**overrides) -> ml_collections.ConfigDict:
  """--mode=inpaint: held-out images completed under masks (imgen/modes/inpaint.py)."""
  group = sampler_group()
  group.update(
    dict(
      mask="centre",  # 'centre', 'boxes', 'strokes' or 'blobs'.
      num_images=500,  # The first images of data.eval_split.
      resample=5,  # RePaint: each step repeated this many times (1 = off).
      reconstruction=0.0,  # > 0: reconstruction guidance of this weight (docs/diffusion.md).
      mask_seed=0,
    )
  )
  group.update(overrides)
  return group


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.family = "diffusion"
  config.modes = "train,eval,sample,inpaint"  # The --mode values it is for.
  config.seed = 0
  config.data = common.data()

  config.model = ml_collections.ConfigDict()
  config.model.name = "unet"
  config.model.image_size = 28
  config.model.channels = 16
  config.model.channel_mults = (1, 2, 4)
  config.model.num_res_blocks = 1
  config.model.attention_resolutions = (7,)
  config.model.dropout = 0.0
  config.model.norm_groups = 8
  config.model.coordinates = False  # Two input channels of each pixel's (x, y) in [-1, 1].
  config.model.conditional = False
  config.model.dtype = "float32"
  config.model.layer_forms = "auto"  # Layers' CPU forms on CPU, XLA's elsewhere; or cpu/xla.

  # Sampling from sigma 20 over rho-5 levels, not EDM's 80 and 7: 13 of the 40 levels of
  # EDM's schedule lie above sigma 10, where these digits are noise (docs/diffusion.md).
  config.diffusion = diffusion_group(sigma_max=20.0)
  config.sample = sampler_group(rho=5.0)
  # Reconstruction guidance 4: 40% -> 76.5% of centre-box completions read right (docs).
  config.inpaint = inpaint_group(rho=5.0, reconstruction=4.0)
  config.optim = common.optimizer(
    2e-3, warmup_steps=100, schedule="cosine", clip_norm=1.0, ema_decay=0.995
  )
  config.train = common.train(num_steps=2600, checkpoint_every=500)
  # XLA allocates a call's temporaries afresh: 10 steps a call share them (2.0 -> 2.9
  # steps/s on CPU for issue 34's U-Net, BENCHMARKS.md).
  config.train.steps_per_dispatch = 10
  config.eval = common.evaluation(
    every_steps=2600, sample_every=500, batch_size=100, metrics="fid,kid,is,pr"
  )
  config.eval.vb_timesteps = 8  # KL terms of the bound per held-out image (T - 1: all).

  if arg == "smoke":
    shrink_for_smoke(config)
  elif arg:
    raise common.unknown_variant(arg, "configs/diffusion.py")
  return config


def shrink_for_smoke(config: ml_collections.ConfigDict) -> None:
  common.shrink_for_smoke(config)
  # Self-attention only in the middle block (at 14x14), and residual blocks only
  # on the way up and in the middle: the compile time of tests (a third of the
  # U-Net's operations); the full layout is tested in tests/test_ddpm_paper.py.
  config.model.update(channels=8, channel_mults=(1, 2), attention_resolutions=(), norm_groups=4)
  config.model.num_res_blocks = 0
  config.model.dropout = 0.1
  config.diffusion.num_steps = 20
  config.sample.steps = 5
  config.inpaint.update(steps=5, num_images=24, resample=2)
  config.optim.warmup_steps = 2
  config.eval.update(batch_size=200, metrics="", vb_timesteps=1, best_metric="loss")
  config.eval.best_mode = "min"
  # One evaluation and one grid, at the end: a U-Net's sampler and bound cost
  # seconds each; checkpoints stay at 3 and 6 (resuming from 3 is tested).
  config.eval.update(every_steps=6, sample_every=6)
