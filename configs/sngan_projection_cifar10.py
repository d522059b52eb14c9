"""Class-conditional SNGAN on CIFAR-10: conditional BatchNorm in G and the
projection discriminator.

Miyato & Koyama, "cGANs with Projection Discriminator", ICLR 2018
(arXiv:1802.05637): D's logit gains <embed(y), phi(x)>, the class embedding
projected on D's pooled features (Eq. 3; spectrally normalised, like every
layer of D), and G's BatchNorms take a gain and a bias per class. The network,
hinge loss and optimiser are SNGAN's CIFAR-10 ones (configs/sngan_cifar10.py;
the authors' released configs/sn_cifar10_conditional.yml differs from the
unconditional one only in the conditioning). G 4,304,387 and D 1,055,104
parameters.

Published figures: the camera-ready paper's CIFAR-10 projection model is
reported elsewhere as Inception Score 8.62 and FID 17.5; those numbers could
not be checked in the paper itself here (the version reachable, the
OpenReview submission, has ImageNet experiments only), so treat them as
unverified. --mode=sample draws eval.classes (default all), one class per row;
training logs the conditional accuracy only with an in-domain classifier
(eval.feature_network=cnn).

  python main.py --config=configs/sngan_projection_cifar10.py --config.data.name=cifar10 ...
"""

import ml_collections

from configs import sngan_cifar10


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = sngan_cifar10.get_config()
  config.model.conditional = True
  return sngan_cifar10.finish(config, arg, "configs/sngan_projection_cifar10.py")
