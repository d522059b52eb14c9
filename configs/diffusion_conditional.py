"""Class-conditional DDPM on the embedded digits with classifier-free guidance:
configs/diffusion.py with the label fed to the U-Net, dropped 10% of the time
in training (Ho & Salimans 2022), and samples guided with scale 2 (w = 1).

  python main.py --config=configs/diffusion_conditional.py --workdir=runs/diffusion_conditional
  python main.py --config=configs/diffusion_conditional.py \
    --workdir=runs/diffusion_conditional --mode=sample --config.eval.classes=3,5
"""

import ml_collections

from configs import common
from configs import diffusion


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "smoke"):
    raise common.unknown_variant(arg, "configs/diffusion_conditional.py")
  config = diffusion.get_config(arg)
  config.model.conditional = True
  config.sample.guidance_scale = 2.0
  config.inpaint.guidance_scale = 2.0
  if arg is None:
    config.train.num_steps = 1000
    config.eval.every_steps = 1000
  return config
