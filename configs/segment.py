"""U-Net segmentation of the embedded `digit_scenes` (offline).

  python main.py --config=configs/segment.py
  python main.py --config=configs/segment.py:smoke               # seconds, for tests
  python main.py --config=configs/segment.py --workdir=runs/segment --mode=segment

Default: Ronneberger et al.'s U-Net at 64x64 with 'same' convolutions, depth
3 (64, 32, 16, 8 pixels), width 16 (16-32-64-128 channels), BatchNorm; 11
classes (background and the ten digits), cross-entropy; Adam 2e-3 with cosine
decay, batch 16, 5,000 steps. Mean IoU over the 1,000 test scenes is logged every 500
steps and picks the checkpoint kept in workdir/best.

Measured 2026-12-01, one run, 2 shared-VM CPU cores (Intel Sapphire Rapids),
nothing else running: 5,000 steps in 18m57s from the first step to the last
(~4.4 steps/s, evaluations included; 19m29s for the command, the prepared
dataset reused). Test mIoU 0.519 over the 11 classes (0.28 at step 2,000,
0.44 at 3,000, 0.51 at 4,000), mean Dice 0.672, pixel accuracy 0.965;
per-class IoU background 0.985, digits 0-9 0.553, 0.445, 0.461, 0.463, 0.500,
0.462, 0.555, 0.464, 0.415, 0.408. The target of 0.90 is NOT met: the masks
follow the strokes (samples/segmentation_0005000.png), but many digits come
out in two or three classes. Width 8 with depth 4 (twice the steps/s) reached
only 0.11 by step 3,000.
"""

import ml_collections

from configs import common

DIGIT_CLASSES = "background," + ",".join(str(d) for d in range(10))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.family = "segment"
  config.modes = "train,eval,segment"  # The --mode values it is for.
  config.seed = 0
  config.data = common.data("digit_scenes")
  config.data.mask_key = "mask"  # The integer (H, W) feature to predict.

  config.model = ml_collections.ConfigDict()
  config.model.image_size = 64
  config.model.num_classes = 11
  config.model.class_names = DIGIT_CLASSES  # '' names them 0..num_classes-1.
  config.model.depth = 3  # Poolings: image_size must be divisible by 2**depth.
  config.model.width = 16  # Channels of the first level; doubled per level.
  config.model.norm = "batch"  # 'batch', 'group' or 'none'.
  config.model.dtype = "float32"  # Or bfloat16 (accelerators): activations; params stay f32.

  config.seg = ml_collections.ConfigDict()
  config.seg.loss = "ce"  # 'ce', 'dice' or 'ce+dice'.
  config.seg.class_weights = ""  # One weight per class, comma-separated; '' = all 1.

  config.optim = common.optimizer(2e-3, schedule="cosine")

  config.train = common.train(num_steps=5000, checkpoint_every=500, batch_size=16)
  config.eval = common.evaluation(
    every_steps=500, sample_every=500, batch_size=200, best_metric="miou", best_mode="max"
  )

  config.segment = ml_collections.ConfigDict()
  config.segment.input = ""  # --mode=segment: '' (held-out split), a folder of images, an .npz.

  if arg == "smoke":
    shrink_for_smoke(config)
  elif arg:
    raise common.unknown_variant(arg, "configs/segment.py")
  return config


def shrink_for_smoke(config: ml_collections.ConfigDict) -> None:
  common.shrink_for_smoke(config)
  config.data.name += "/tiny"
  config.model.update(depth=2, width=4)
  config.eval.batch_size = 16
