"""Text -> image: DDPM on `scene_captions` (the `digit_scenes` scenes with
captions of their layout, imgen/data/captions.py) at 32x32, conditioned on
the caption through a small transformer trained from scratch and
cross-attention in the U-Net, with classifier-free guidance.

  python main.py --config=configs/text_to_image.py --workdir=runs/text_to_image
  python main.py --config=configs/text_to_image.py --workdir=runs/text_to_image \\
    --mode=sample --config.sample.prompt="a large blue 0 in the centre on grass|a red 3 on brick"
  python main.py --config=configs/text_to_image.py --workdir=runs/text_to_image --mode=prompts
  python main.py --config=configs/text_to_image.py:smoke     # seconds, for tests

Default: issue 14's U-Net of configs/diffusion.py (32 channels, multipliers (1, 2, 2)
over 32, 16 and 8 pixels, one block per resolution, self-attention at 8x8)
with 4-head cross-attention to the caption at 16x16 and 8x8; the text
encoder: 2 transformer blocks of width 64, 4 heads, over the 56 caption
tokens; captions dropped 10% of the time in training, samples guided with
scale 3 (DDIM, 50 steps, eta 1). Adam 1e-3, batch 32.

`--mode=prompts` draws one sample per held-out test caption and scores it
with the segmenter of configs/segment.py trained at this size
(`prompts.segmenter_workdir`, see configs/segment.py's 32x32 command): the
layout accuracy (the digits found are exactly those asked for, in the asked
colours and positions) on seen and on held-out combinations, and FID against
the real test scenes in the segmenter's features.
"""

import ml_collections

from configs import common
from configs import diffusion

# Prompts of the sample grids (one per row), stated as fully as the training captions:
# four seen combinations, then four (digit, colour, position) triples held out of training.
PROMPTS = "|".join(
  (
    "a large green 5 in the centre on grass",
    "a large red 3 in the centre on brick",
    "a medium white 0 in the centre on the moon",
    "a small blue 7 at the bottom right and a large yellow 2 in the centre on gravel",
    "a large blue 0 in the centre on grass",
    "a large yellow 1 in the centre on brick",
    "a large magenta 5 in the centre on the moon",
    "a medium red 3 at the top on coins",
  )
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = diffusion.get_config()
  config.family = "text_to_image"
  config.modes = "train,eval,sample,inpaint,prompts"  # The --mode values it is for.
  config.data = common.data("scene_captions", resize="resize")
  config.model.image_size = 32
  # DDPM with DDIM-50 and configs/diffusion.py's U-Net of issue 14, as docs/multimodal.md
  # measured them; the text and speech issue moves them to the newer recipe.
  config.model.update(channels=32, channel_mults=(1, 2, 2))
  config.diffusion.objective = "ddpm"
  config.sample.update(sampler="ddim", steps=50, eta=1.0, schedule="levels")
  config.inpaint.update(sampler="ddim", steps=50, eta=1.0, schedule="levels", reconstruction=0.0)
  config.model.attention_resolutions = (8,)
  config.model.cross_attention_resolutions = (16, 8)
  config.model.heads = 4
  config.condition = ml_collections.ConfigDict(dict(width=64, depth=2, heads=4))
  config.sample.guidance_scale = 3.0
  config.sample.prompt = PROMPTS
  config.inpaint.guidance_scale = 1.0
  config.train.num_steps = 3000
  config.train.batch_size = 32
  config.train.checkpoint_every = 500
  config.train.steps_per_dispatch = 10
  config.eval.update(every_steps=3000, sample_every=1000, metrics="", best_metric="bits_per_dim")
  config.prompts = ml_collections.ConfigDict(
    dict(
      segmenter_workdir="runs/segment32",  # configs/segment.py trained at model.image_size=32.
      num_prompts=1000,  # Test captions scored (all 1,000 test scenes at most).
      fid=True,  # FID against the real test scenes in the segmenter's features.
    )
  )
  if arg == "smoke":
    diffusion.shrink_for_smoke(config)
    config.data.name += "/tiny"
    config.model.update(attention_resolutions=(), cross_attention_resolutions=(16,))
    config.condition.update(width=16, depth=1, heads=2)
    config.model.heads = 2
    config.model.dropout = 0.0  # The U-Net's dropout masks are tested on configs/diffusion.py.
    config.sample.prompt = "a large green 5 in the centre on grass|a red 3 at the top on brick"
    config.prompts.num_prompts = 16
  elif arg:
    raise common.unknown_variant(arg, "configs/text_to_image.py")
  return config
