"""CNN classifier on the embedded MNIST digits (offline).

  python main.py --config=configs/cnn.py
  python main.py --config=configs/cnn.py:smoke                  # seconds, for tests
  python main.py --config=configs/cnn.py --config.model.name=resnet

Default: the seed's CNN (conv-BN-ReLU x2, max-pool, x2; dense 128, dropout
0.3; softmax), Adam 1e-3 with cosine decay, batch 64, 2,000 steps (32 epochs
of the 4,000 training digits). Test accuracy on the 1,000 held-out digits is
logged every 500 steps and at the end. Measured 2026-11-24: 97.3% at step 500,
98.2% at 1,000, 98.4% at 2,000 (target >= 97%).
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.family = "cnn"
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = "embedded_mnist"
  config.data.data_dir = config_dict.placeholder(str)
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.image_key = "image"
  config.data.resize = "pad"

  config.model = ml_collections.ConfigDict()
  config.model.name = "simple"  # or 'resnet'.
  config.model.image_size = 28
  config.model.num_classes = 10
  config.model.width = 32
  config.model.dropout = 0.3

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 1e-3
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.weight_decay = 0.0
  config.optim.cosine_decay = True

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 64
  config.train.num_steps = 2000
  config.train.log_every = 100
  config.train.checkpoint_every = 500
  config.train.keep_checkpoints = 3

  config.eval = ml_collections.ConfigDict()
  config.eval.every_steps = 500
  config.eval.batch_size = 200
  config.eval.sample_every = 2000
  config.eval.num_samples = 64

  if arg == "smoke":
    config.model.width = 4
    config.train.batch_size = 8
    config.train.num_steps = 6
    config.train.log_every = 2
    config.train.checkpoint_every = 3
    config.eval.every_steps = 3
    config.eval.batch_size = 200
    config.eval.sample_every = 3
    config.eval.num_samples = 16
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of configs/cnn.py; known: 'smoke'.")
  return config
