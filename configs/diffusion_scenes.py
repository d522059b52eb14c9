"""Flow matching on `digit_scenes` (64x64 colour scenes: MNIST digits on photographs'
textures): the scene model with which `--mode=compose` edits composed scenes
(SDEdit, `compose.scene_workdir`).

  python main.py --config=configs/diffusion_scenes.py --workdir=runs/diffusion_scenes
  python main.py --config=configs/compose.py --mode=compose --workdir=runs/compose \\
    --config.compose.scene_workdir=runs/diffusion_scenes

configs/diffusion.py's recipe (flow matching, logit-normal times; DDIM with eta 1 over 40
levels from sigma 20; Adam 2e-3, cosine, EMA 0.995) on a U-Net of 16 channels with
multipliers (1, 2, 2, 2) over 64, 32, 16 and 8 pixels, one residual block per resolution,
attention at 8x8; batch 32. Editing needs the model only below the edit's noise level, the
easier part of the range. On the 2-core CPU (2026-12-07) it trains at 1.63 steps/s, so 3,000
steps take ~31 minutes (32 channels: 0.62 steps/s). Not yet measured: what SDEdit makes of
it (issue 37's open work, docs/textures.md).
"""

import ml_collections

from configs import common
from configs import diffusion


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = diffusion.get_config()
  config.modes = "train,eval,sample,inpaint"
  config.data = common.data("digit_scenes")
  config.model.update(
    image_size=64, channels=16, channel_mults=(1, 2, 2, 2), attention_resolutions=(8,)
  )
  config.train.update(batch_size=32, num_steps=3000)
  # No feature network reads colour scenes here (the CNN reads digits): the loss picks the best.
  config.eval.update(every_steps=3000, sample_every=1000, metrics="", best_metric="loss")
  if arg == "smoke":
    diffusion.shrink_for_smoke(config)
    config.data.name += "/tiny"
    config.eval.batch_size = 16
  elif arg:
    raise common.unknown_variant(arg, "configs/diffusion_scenes.py")
  return config
