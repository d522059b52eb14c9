"""Model registry: name -> (generator, discriminator) constructors."""

from imgen.models import dcgan
from imgen.models.layers import IMPLEMENTATIONS as UPSAMPLE_IMPLEMENTATIONS
from imgen.models.layers import ConvTranspose4x4S2

GANS = {
  "dcgan": (dcgan.Generator, dcgan.Discriminator),
}

__all__ = ["GANS", "UPSAMPLE_IMPLEMENTATIONS", "ConvTranspose4x4S2", "dcgan"]
