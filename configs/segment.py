"""U-Net segmentation of the embedded `digit_scenes` (offline).

  python main.py --config=configs/segment.py
  python main.py --config=configs/segment.py:smoke               # seconds, for tests
  python main.py --config=configs/segment.py --workdir=runs/segment --mode=segment

Default: Ronneberger et al.'s U-Net at 64x64 with 'same' convolutions, depth
3 (64, 32, 16, 8 pixels), width 16 (16-32-64-128 channels), BatchNorm; 11
classes (background and the ten digits), cross-entropy plus deep supervision
of weight 3 at 32x32 and 16x16 (docs/segmentation.md: it learns the digits'
identities 2-3x faster); Adam 2e-3 with cosine decay, batch 16, 6,800 steps
(~8 minutes on 2 CPU cores). Mean IoU over the 1,000 test scenes is logged every 500
steps and picks the checkpoint kept in workdir/best.
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
  config.model.channel_mults = ()  # Or depth + 1 multiples of width, the bottom's last.
  config.model.norm = "batch"  # 'batch', 'group' or 'none'.
  config.model.dtype = "float32"  # Or bfloat16 (accelerators): activations; params stay f32.
  config.model.layer_forms = "auto"  # Layers' CPU forms on CPU, XLA's elsewhere; or cpu/xla.

  config.seg = ml_collections.ConfigDict()
  config.seg.loss = "ce"  # 'ce', 'dice' or 'ce+dice'.
  config.seg.class_weights = ""  # One weight per class, comma-separated; '' = all 1.
  config.seg.deep_supervision = 3.0  # Weight of the lower levels' cell losses; 0: off.
  config.seg.elastic = 0.0  # RMS pixels of the elastic distortion of training scenes; 0: off.
  config.seg.elastic_sigma = 5.0  # Its smoothing, in pixels.

  config.optim = common.optimizer(2e-3, schedule="cosine")

  config.train = common.train(num_steps=6800, checkpoint_every=500, batch_size=16)
  # 10 steps a call share the call's temporaries, which XLA allocates afresh per call
  # (10.5 -> 14.5 steps/s on CPU, BENCHMARKS.md issue 34).
  config.train.steps_per_dispatch = 10
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
