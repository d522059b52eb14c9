"""Convolutional VAE on the embedded MNIST digits (offline).

  python main.py --config=configs/vae.py
  python main.py --config=configs/vae.py:smoke                    # seconds, for tests
  python main.py --config=configs/vae.py --config.model.beta=4    # beta-VAE
  python main.py --config=configs/vae.py --config.model.likelihood=gaussian

Default: Bernoulli likelihood on dynamically binarised 28x28 digits, 16-d
latent, Adam 1e-3, batch 64, 4,000 steps (2m26s, ~34 steps/s, measured
2026-11-25; ~22 steps/s on the slower VM of 2026-11-24). Held-out (1,000 test
digits) ELBO and IWAE NLL (K=100) are logged every 1,000 steps and at the end.
Measured: test ELBO -103.1 nats (recon 79.1, KL 24.0), IWAE NLL 96.1 nats
(0.177 bits/dim), the same on both days; train ELBO ~-93 (4,000 training
digits only, so it overfits past ~3,000 steps). Prior samples: FID 218 in the
in-domain CNN's features (runs/cnn). One run. Again 2026-12-02 on a slower VM,
8 steps per call (issue 18's code before its last change, the loop then unrolled): 4m12s wall
with start-up and evaluations, 23-25 steps/s; test ELBO -103.1, IWAE NLL 96.4, FID 201.7.
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
