"""U-Net segmentation of the embedded `texture_mosaic` (offline).

  python main.py --config=configs/segment_mosaic.py --workdir=runs/segment_mosaic
  python main.py --config=configs/segment_mosaic.py --workdir=runs/segment_mosaic --mode=segment

configs/segment.py's U-Net and training on Voronoi mosaics of 8 textures and
photographs (brick, grass, gravel, coins, moon, page, retina, hubble deep
field): the mask is the texture's index, so there is no background class.
Without deep supervision and with 5,000 steps: on the mosaics it peaked early and
ended lower (docs/segmentation.md). An EMA of the weights (decay 0.999) is evaluated
and kept: the raw weights' test scores swing widely from one evaluation to the next.
"""

import ml_collections

from configs import segment
from imgen.data import scenes


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = segment.get_config(arg)
  config.data.name = "texture_mosaic" + ("/tiny" if arg == "smoke" else "")
  config.model.num_classes = len(scenes.MOSAIC_SOURCES)
  config.model.class_names = ",".join(s.name for s in scenes.MOSAIC_SOURCES)
  config.seg.deep_supervision = 0.0
  config.optim.ema_decay = 0.999
  if arg != "smoke":
    config.train.num_steps = 5000
  return config
