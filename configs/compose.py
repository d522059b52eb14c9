"""Image composition (`--mode=compose`): scenes from trained generators, blended, segmented.

  python main.py --config=configs/compose.py --mode=compose --workdir=runs/compose
  python main.py --config=configs/compose.py --mode=compose --workdir=runs/compose \\
    --config.compose.classes=3,7              # a 3 and a 7 in every scene

It reads three kinds of trained runs (train them first, with these workdirs):
- backgrounds: spatial texture GANs, `compose.texture_workdirs`
  (python main.py --config=configs/texture.py --workdir=runs/texture_brick, and
  --config.texture.exemplar=grass / gravel into runs/texture_grass / _gravel);
- digits: the class-conditional GAN, `compose.digits_workdir`
  (python main.py --config=configs/gan_conditional.py --workdir=runs/gan_conditional);
- the judge: the segmenter trained on real digit_scenes, `compose.segment_workdir`
  (python main.py --config=configs/segment.py --workdir=runs/segment).
It writes workdir/compose/: blends.png (the same scenes pasted, alpha-blended
and Poisson-blended, their true masks and the segmenter's masks of the
Poisson scenes), scenes_<blend>.png, scenes.npz (images, masks, layouts,
predictions) and scores.json (mIoU and FID per blend; `imgen/modes/compose.py`).
Measured 2026-12-01, one run, 1,000 scenes (brick, grass and gravel GANs of
configs/texture.py, the conditional GAN of configs/gan_conditional.py, issue
15's digit segmenter), 3m30s: segmenter mIoU paste 0.516, alpha 0.514,
mixed-gradient Poisson 0.464, against 0.519 on real test scenes; FID to the
real test scenes in the segmenter's features 8.72, 8.40, 8.70 (real train
scenes: 0.60). README's composition section has the rest.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.family = "compose"  # A mode over other runs: it trains nothing.
  config.modes = "compose"  # The --mode values it is for.
  config.compose = ml_collections.ConfigDict(
    dict(
      texture_workdirs="runs/texture_brick,runs/texture_grass,runs/texture_gravel",
      digits_workdir="runs/gan_conditional",
      segment_workdir="runs/segment",
      classes="",  # '' = 1-4 random digits per scene; '3,7' = those digits in every scene.
      num_scenes=1000,  # The size of digit_scenes' test split, FID's reference.
      seed=0,
    )
  )
  if arg == "smoke":
    config.compose.num_scenes = 16
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of configs/compose.py; known: 'smoke'.")
  return config
