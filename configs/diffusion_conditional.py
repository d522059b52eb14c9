"""Class-conditional DDPM on the embedded digits with classifier-free guidance:
configs/diffusion.py with the label fed to the U-Net, dropped 10% of the time
in training (Ho & Salimans 2022), and samples guided with scale 2 (w = 1).

  python main.py --config=configs/diffusion_conditional.py --workdir=runs/diffusion_conditional
  python main.py --config=configs/diffusion_conditional.py \
    --workdir=runs/diffusion_conditional --mode=sample --config.eval.classes=3,5

Measured 2026-12-01, one run, 2 shared CPU cores (Intel Sapphire Rapids VM):
1,000 steps (the run was stopped there to fit the session; the steps are
those of this config): ~19 minutes of training at the ~0.9 steps/s the
U-Net runs alone (an estimate from the rate), about an hour of wall time
because the test suite and other runs shared the cores (with an 8-minute
pause and an exact resume from step 400). 1,000 samples (100 per class;
DDIM 50 steps, eta 1, guidance 2) against the test split in the in-domain
CNN's features (runs/cnn): FID 33.5,
KID 33.7 (std 13), IS 8.67, precision 0.759, recall 0.838, conditional
accuracy 78.7%; test bound 1.94 bits/dim given the true labels. Issue 14's
target of conditional accuracy >= 98% is NOT met at 1,000 steps. The grid
(samples_0001000.png, one class per row) reads as digits of mostly the
requested classes.
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
