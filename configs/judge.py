"""The GenEval-style judge of text-to-image samples: a layout reader trained on
real `layout_scenes` (offline).

  python main.py --config=configs/judge.py --workdir=runs/judge
  python main.py --config=configs/judge.py:smoke               # seconds, for tests

Default: imgen/models/reader.py reading 32x32 scenes (the text-to-image
model's size) resized to 48x48: (conv-BN-ReLU x2, max-pool) at 48, 24 and 12
pixels with 32, 64 and 128 channels, two conv-BN-ReLU of 256 at 6x6 (width
32: all-correct 0.934 on layout_scenes 1.2.0, 0.871 at width 16, ~27 minutes
alone against ~10, docs/multimodal.md); one
head shared by the 9 cells (each cell's 4x4 window of the map, dense 256,
dropout 0.2: present, class, colour, size), the background from the map's
mean. Half of each training batch is elastically distorted (1 px RMS,
smoothed over 3 px) on and around its digits only, and those rows teach no
size (docs/multimodal.md: all-correct 0.860 against 0.846 without). Adam 1e-3
with cosine decay, batch 64. The held-out evaluation is the
judge's ceiling: the share of the 1,000 real test scenes read right per attribute and all at once
(`test/read_all` picks the checkpoint kept in workdir/best).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.family = "judge"
  config.modes = "train,eval"  # The --mode values it is for.
  config.seed = 0
  config.data = common.data("layout_scenes", resize="resize")

  config.model = ml_collections.ConfigDict()
  config.model.image_size = 32
  config.model.width = 32  # Channels at the first level, doubled at each pooling.
  config.model.levels = 3  # Poolings; the reader resizes images to 6 * 2**levels pixels.
  config.model.hidden = 256
  config.model.dropout = 0.2
  config.model.dtype = "float32"  # Or bfloat16 (accelerators): activations; params stay f32.
  config.model.layer_forms = "auto"  # Layers' CPU forms on CPU, XLA's elsewhere; or cpu/xla.

  config.judge = ml_collections.ConfigDict()
  config.judge.elastic = 1.0  # RMS pixels of the elastic distortion of training scenes; 0: off.
  config.judge.elastic_sigma = 3.0  # Its smoothing, in pixels.
  config.judge.elastic_ink = True  # Distort only the digits and 2 pixels around them.
  config.judge.elastic_share = 0.5  # Of the rows distorted (they teach no size).

  config.optim = common.optimizer(1e-3, schedule="cosine")

  config.train = common.train(num_steps=4000, checkpoint_every=500, batch_size=64)
  config.train.steps_per_dispatch = 10
  config.eval = common.evaluation(
    every_steps=500, sample_every=0, batch_size=200, best_metric="read_all", best_mode="max"
  )

  if arg == "smoke":
    common.shrink_for_smoke(config)
    config.data.name += "/tiny"
    config.model.update(width=4, hidden=16)
  elif arg:
    raise common.unknown_variant(arg, "configs/judge.py")
  return config
