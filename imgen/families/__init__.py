"""Model families: `config.family` -> the class that builds its state, steps and images.

`FAMILIES` is the one list of families: `main.py`, the modes, the tests and the
benchmarks all read it, and each family's default config is
`configs/<name>.py`. A new family is its module here (a class on the contract
of `imgen.families.base`), its networks in `imgen/models/`, its config, its
tests, and its line below.
"""

import ml_collections

from imgen.core.errors import ConfigError
from imgen.data.spec import DataSpec
from imgen.families.base import Evaluates
from imgen.families.base import Family
from imgen.families.base import Generates
from imgen.families.base import Inpaints
from imgen.families.base import Segments
from imgen.families.cnn import CNNFamily
from imgen.families.diffusion import DiffusionFamily
from imgen.families.distill import DistillFamily
from imgen.families.gan import GANFamily
from imgen.families.judge import JudgeFamily
from imgen.families.multimodal import SpeechToImageFamily
from imgen.families.multimodal import TextToImageFamily
from imgen.families.segment import SegmentationFamily
from imgen.families.vae import VAEFamily

FAMILIES: dict[str, type[Family]] = {
  "gan": GANFamily,
  "vae": VAEFamily,
  "cnn": CNNFamily,
  "diffusion": DiffusionFamily,
  "distill": DistillFamily,
  "segment": SegmentationFamily,
  "judge": JudgeFamily,
  "text_to_image": TextToImageFamily,
  "speech_to_image": SpeechToImageFamily,
}

__all__ = ["FAMILIES", "Evaluates", "Family", "Generates", "Inpaints", "Segments", "create"]


def create(config: ml_collections.ConfigDict, spec: DataSpec) -> Family:
  """The family `config.family`, built (and its config checked) for data of `spec`."""
  name = config.get("family")
  if name not in FAMILIES:
    raise ConfigError(f"family {name!r} is unknown; known: {sorted(FAMILIES)}.")
  return FAMILIES[name](config, spec)
