"""SNGAN on STL-10 at 48x48: the larger ResNet of the same paper.

Miyato et al., ICLR 2018 (arXiv:1802.05957), Appendix B.4, Table 5 (STL-10
ResNet): z in R^128; G: dense -> 6x6x512, ResBlock up 256, up 128, up 64, BN,
ReLU, 3x3 conv 3, tanh; D: ResBlock down 64, down 128, down 256, down 512,
ResBlock 1024, ReLU, global sum pooling, dense -> 1 (G 4,878,083 and D
10,141,440 parameters, counted from Table 5 in tests/test_gan_papers.py). Loss, optimiser and
n_dis as in configs/sngan_cifar10.py. Published (Table 2, SN-GANs ResNet,
STL-10): Inception Score 9.10 +- .04, FID 40.1 +- .50.

  python main.py --config=configs/sngan_stl10.py --config.data.name=stl10 ...

STL-10's 96x96 images are resized to 48x48 (data.resize='resize': centre crop
and bilinear). Not run here: STL-10 cannot be downloaded on this machine.
"""

import ml_collections

from configs import common
from configs import sngan_cifar10


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = sngan_cifar10.get_config()
  config.data = common.data(name="stl10", resize="resize")
  config.data.train_split = "train+unlabelled"
  config.model.update(
    image_size=48,
    g_channels=(512, 256, 128, 64),
    d_channels=(64, 128, 256, 512, 1024),
    d_downsample=(True, True, True, True, False),
  )
  return sngan_cifar10.finish(config, arg, "configs/sngan_stl10.py")
