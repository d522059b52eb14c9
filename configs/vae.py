"""Convolutional VAE on the embedded MNIST digits (offline).

python main.py --config=configs/vae.py
python main.py --config=configs/vae.py:smoke                    # seconds, for tests
python main.py --config=configs/vae.py --config.model.beta=4    # beta-VAE
python main.py --config=configs/vae.py --config.model.likelihood=gaussian
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.family = "vae"
  config.modes = "train,eval,sample"  # The --mode values it is for.
  config.seed = 0
  config.data = common.data()
  config.data.binarize = "dynamic"  # 'dynamic', 'fixed' (threshold 1/2) or 'none'.

  config.model = ml_collections.ConfigDict()
  config.model.name = "conv_vae"
  config.model.image_size = 28
  config.model.latent_dim = 16
  config.model.width = 32
  config.model.likelihood = "bernoulli"  # or 'gaussian' (discretised, 256 levels).
  config.model.beta = 1.0  # Weight of the KL term (beta-VAE when > 1).
  config.model.kl_warmup_steps = 0  # Linear warm-up of the KL weight; 0 = none.
  config.model.upsample = "subpixel"
  config.model.dtype = "float32"  # Or bfloat16 (accelerators): activations; params stay f32.
  config.model.layer_forms = "auto"  # Layers' CPU forms on CPU, XLA's elsewhere; or cpu/xla.

  config.optim = common.optimizer(1e-3)
  config.train = common.train(num_steps=4000, checkpoint_every=1000)
  # Ten steps per device call (one lax.scan; the same run up to rounding; the log,
  # save and eval steps are multiples of 10): a short step's per-call cost is hidden.
  config.train.steps_per_dispatch = 10
  config.eval = common.evaluation(
    every_steps=1000,
    sample_every=1000,
    batch_size=100,
    metrics="fid,kid,is,pr",
    best_metric="elbo",
    best_mode="max",
  )
  config.eval.iwae_samples = 100

  if arg == "smoke":
    common.shrink_for_smoke(config)
    config.model.width = 8
    config.model.latent_dim = 4
    config.eval.batch_size = 200
    config.eval.iwae_samples = 3
    config.eval.metrics = ""
  elif arg:
    raise common.unknown_variant(arg, "configs/vae.py")
  return config
