"""CNN classifier on the embedded MNIST digits (offline).

python main.py --config=configs/cnn.py
python main.py --config=configs/cnn.py:smoke                  # seconds, for tests
python main.py --config=configs/cnn.py --config.model.name=resnet
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.family = "cnn"
  config.modes = "train,eval"  # The --mode values it is for.
  config.seed = 0
  config.data = common.data()

  config.model = ml_collections.ConfigDict()
  config.model.name = "simple"  # or 'resnet'.
  config.model.image_size = 28
  config.model.num_classes = 10
  config.model.width = 32
  config.model.dropout = 0.3
  config.model.dtype = "float32"  # Or bfloat16 (accelerators): activations; params stay f32.
  config.model.layer_forms = "auto"  # Layers' CPU forms on CPU, XLA's elsewhere; or cpu/xla.

  config.optim = common.optimizer(1e-3, schedule="cosine")

  config.train = common.train(num_steps=2000, checkpoint_every=500)
  # Ten steps per device call (one lax.scan; the same run up to rounding; the log,
  # save and eval steps are multiples of 10): a short step's per-call cost is hidden.
  config.train.steps_per_dispatch = 10
  config.eval = common.evaluation(
    every_steps=500, sample_every=2000, batch_size=200, best_metric="accuracy", best_mode="max"
  )

  if arg == "smoke":
    common.shrink_for_smoke(config)
    config.model.width = 4
  elif arg:
    raise common.unknown_variant(arg, "configs/cnn.py")
  return config
