"""WGAN-GP on CIFAR-10: the ResNet critic with the gradient penalty.

Gulrajani, Ahmed, Arjovsky, Dumoulin & Courville, "Improved Training of
Wasserstein GANs", NeurIPS 2017 (arXiv:1704.00028):
- Loss: the Wasserstein critic with the gradient penalty on random
  interpolates, lambda 10, n_critic 5 (Algorithm 1).
- Optimiser: Adam 2e-4 decayed linearly to 0 over 100K generator iterations,
  batch 64 (Appendix F); beta1 0, beta2 0.9 (Algorithm 1).
- Network (Appendix F and the authors' gan_cifar_resnet.py): the ResNet of
  imgen/models/resnet_gan.py with 128 channels in G and D, BatchNorm in G and
  no normalisation in the critic, the critic's features averaged (not summed)
  over space into a dense layer with a bias. G 1,204,483 and D 1,053,825
  parameters.
- Published (Table 3, unsupervised CIFAR-10, "WGAN-GP (ResNet, ours)"):
  Inception Score 7.86 +- .07.

Differences here: G's update reuses the last critic step's 64 fakes (the
authors' code draws 128); initialisation is SNGAN's Glorot-uniform.

  python main.py --config=configs/wgan_gp_cifar10.py --config.data.name=cifar10 ...
"""

import ml_collections

from configs import sngan_cifar10


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = sngan_cifar10.get_config()
  config.model.update(
    spectral_norm=False, g_channels=(128, 128, 128, 128), d_channels=(128, 128, 128, 128)
  )
  config.model.d_pool = "mean"
  config.objective.update(loss="wgan_gp", gp_weight=10.0, n_dis=5)
  return sngan_cifar10.finish(config, arg, "configs/wgan_gp_cifar10.py")
