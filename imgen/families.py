"""Model families: name -> class building state, train step and samples."""

import ml_collections

from imgen.data import ImageSpec
from imgen.errors import ConfigError
from imgen.gan import GAN

FAMILIES = {
  "gan": GAN,
}


def create(config: ml_collections.ConfigDict, spec: ImageSpec):
  if config.family not in FAMILIES:
    raise ConfigError(f"family {config.family!r} is unknown; known: {sorted(FAMILIES)}.")
  return FAMILIES[config.family](config, spec)
