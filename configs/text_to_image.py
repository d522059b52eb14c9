"""Text -> image: flow matching on `layout_scenes` (one or two digits in
distinct cells of a 3x3 grid, with captions of their class, colour, size and
position and the background, imgen/data/layouts.py) at 32x32, conditioned on
the caption through a small transformer trained from scratch and
cross-attention in the U-Net, with classifier-free guidance.

  python main.py --config=configs/judge.py --workdir=runs/judge          # the judge, once
  python main.py --config=configs/text_to_image.py --workdir=runs/text_to_image
  python main.py --config=configs/text_to_image.py --workdir=runs/text_to_image \\
    --mode=sample --config.sample.prompt="a medium blue 0 in the centre on grass|a red 3 on brick"
  python main.py --config=configs/text_to_image.py --workdir=runs/text_to_image --mode=prompts
  python main.py --config=configs/text_to_image.py:smoke     # seconds, for tests

Default: configs/diffusion.py's recipe (flow matching with logit-normal times,
Adam 2e-3 with warm-up and cosine decay, clipping, EMA 0.995; stochastic
DDIM over 40 levels from sigma 20) on a U-Net of 32 channels, multipliers
(1, 2, 2) over 32, 16 and 8 pixels, one block per resolution, self-attention
at 8x8, with 4-head cross-attention to the caption at 16x16 and 8x8; the text
encoder: 2 transformer blocks of width 64, 4 heads, over the 56 caption
tokens; captions dropped 10% of the time in training, samples guided with
scale `sample.guidance_scale`. Batch 32.

Options measured but not defaults (docs/multimodal.md): `model.coordinates`
(each pixel's (x, y) as two input channels) and `diffusion.foreground_weight`
(the loss on the digits' ink weighed 1 + w).

`--mode=prompts` draws one sample per held-out test caption and scores it
with the judge of configs/judge.py (`prompts.judge_workdir`): GenEval's
per-attribute and all-correct shares on seen prompts, held-out combinations
and held-out phrasings, beside the judge's reading of the real scenes (its
ceiling), and FID against the real test scenes in the judge's features.
"""

import ml_collections

from configs import common
from configs import diffusion

# Prompts of the sample grids (one per row), stated as fully as the training captions:
# four seen combinations, then four (digit, colour, position) triples held out of training.
PROMPTS = "|".join(
  (
    "a medium green 5 in the centre on grass",
    "a medium red 3 at the top left on brick",
    "a small white 0 at the bottom right and a medium blue 7 at the top left on the moon",
    "a medium yellow 2 on the left and a small cyan 9 on the right on gravel",
    "a medium blue 0 in the centre on grass",
    "a medium yellow 1 in the centre on brick",
    "a medium magenta 5 in the centre on the moon",
    "a medium red 3 at the top and a small white 6 at the bottom right on coins",
  )
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = diffusion.get_config()
  config.family = "text_to_image"
  config.modes = "train,eval,sample,inpaint,prompts"  # The --mode values it is for.
  config.data = common.data("layout_scenes", resize="resize")
  config.model.image_size = 32
  config.model.update(channels=32, channel_mults=(1, 2, 2))
  config.inpaint.reconstruction = 0.0
  config.model.attention_resolutions = (8,)
  config.model.cross_attention_resolutions = (16, 8)
  config.model.heads = 4
  config.condition = ml_collections.ConfigDict(dict(width=64, depth=2, heads=4))
  config.sample.guidance_scale = 2.0  # Of 2 and 4 on 200 test prompts (docs/multimodal.md).
  config.sample.prompt = PROMPTS
  config.inpaint.guidance_scale = 1.0
  config.train.num_steps = 3000
  config.train.batch_size = 32
  config.train.checkpoint_every = 500
  config.train.steps_per_dispatch = 10
  config.eval.update(every_steps=3000, sample_every=1000, metrics="", best_metric="loss")
  config.prompts = ml_collections.ConfigDict(
    dict(
      judge_workdir="runs/judge",  # configs/judge.py trained at model.image_size.
      num_prompts=1000,  # Test captions scored (all 1,000 test scenes at most).
      fid=True,  # FID against the real test scenes in the judge's features.
    )
  )
  if arg == "smoke":
    diffusion.shrink_for_smoke(config)
    config.data.name += "/tiny"
    config.model.update(attention_resolutions=(), cross_attention_resolutions=(16,))
    config.condition.update(width=16, depth=1, heads=2)
    config.model.heads = 2
    config.sample.prompt = "a medium green 5 in the centre on grass|a red 3 at the top on brick"
    config.prompts.num_prompts = 16
  elif arg:
    raise common.unknown_variant(arg, "configs/text_to_image.py")
  return config
