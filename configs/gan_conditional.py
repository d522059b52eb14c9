"""A class-conditional GAN on the embedded digits: configs/gan_r1.py with
conditional BatchNorm in G and a projection discriminator (Miyato & Koyama
2018), trained on the digits' labels.

  python main.py --config=configs/gan_conditional.py --workdir=runs/gan_conditional
  python main.py --config=configs/gan_conditional.py --workdir=runs/gan_conditional \
    --mode=sample --config.eval.classes=3,5      # rows of 3s and 5s
"""

import ml_collections

from configs import common
from configs import gan_r1


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = gan_r1.get_config("smoke" if arg == "smoke" else None)
  config.model.conditional = True
  if arg is None:
    # The rate of the conditional runs measured here (4e-4 was tried only unconditionally).
    config.optim.g.learning_rate = config.optim.d.learning_rate = 2e-4
    config.train = common.train(num_steps=7_000, checkpoint_every=1_000)
    config.eval.update(every_steps=1_000, sample_every=1_000)
  elif arg != "smoke":
    raise common.unknown_variant(arg, "configs/gan_conditional.py")
  return config
