"""Image composition (`--mode=compose`): scenes from trained generators, blended, segmented.

  python main.py --config=configs/compose.py --mode=compose --workdir=runs/compose
  python main.py --config=configs/compose.py --mode=compose --workdir=runs/compose \\
    --config.compose.classes=3,7              # a 3 and a 7 in every scene
  python main.py --config=configs/compose.py --mode=compose --workdir=runs/compose \\
    --config.compose.scene_workdir=runs/diffusion_scenes   # and SDEdit by a scene model
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
      # SDEdit (Meng et al. 2022) of the alpha blends by a diffusion model of the real scenes
      # (configs/diffusion_scenes.py), from this noise level; '' leaves it out.
      scene_workdir="",
      sdedit_sigma=0.5,
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
