"""Model families: name -> class building state, steps and images.

A family supplies `init_state(key)`, a per-replica `make_train_step()`,
`make_eval_step()` (or None) with `summarize_eval(sums)`, `headline(metrics)`,
`sample_images(state, key, num, held_out)` and a per-replica
`make_generate()` (or None) for the sample-quality metrics; the trainer and
the eval modes do the rest.
"""

import ml_collections

from imgen.cnn import CNNFamily
from imgen.data import ImageSpec
from imgen.errors import ConfigError
from imgen.gan import GAN
from imgen.vae import VAEFamily

FAMILIES = {
  "gan": GAN,
  "vae": VAEFamily,
  "cnn": CNNFamily,
}


def create(config: ml_collections.ConfigDict, spec: ImageSpec):
  if config.family not in FAMILIES:
    raise ConfigError(f"family {config.family!r} is unknown; known: {sorted(FAMILIES)}.")
  return FAMILIES[config.family](config, spec)
