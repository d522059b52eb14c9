"""Texture exemplars and the dataset of their random crops (TFDS, prepared on first use).

An exemplar is one texture image: scikit-image's bundled `brick`, `grass` or
`gravel` (512x512 grey, offline from `skimage.data`), or any image file.
`load_exemplar(name, scale)` reads it as uint8 (H, W, C), resized by `scale`
with Pillow's antialiased filter (grey files stay one channel, others RGB).

`texture_crops/<exemplar>` is the data a feed-forward texture GAN's
discriminator sees: `CROPS_TRAIN` train and `CROPS_TEST` test square crops of
`CROP` pixels at uniformly random positions of the exemplar at
`EXEMPLAR_SCALE`, each from its own seeded generator (train and test draw
different positions of the same image: a texture has no held-out half).
`<exemplar>` is `brick`, `grass`, `gravel` or the path of an image file; a
file's dataset is named after a hash of its bytes, so an edited file is a new
dataset.
"""

import dataclasses
import hashlib
import os

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from imgen.core.errors import DataError
from imgen.data import embedded

BUNDLED = ("brick", "grass", "gravel")
EXEMPLAR_SCALE = 0.5  # 512x512 -> 256x256: a brick is ~15 px wide, a 64-px crop holds several.
CROP = 64
CROPS_TRAIN, CROPS_TEST = 4096, 512
_SEED = 20160524  # Fixed forever. (Spatial GAN's arXiv date.)


def load_exemplar(name: str, scale: float = 1.0) -> np.ndarray:
  """The exemplar `name` (bundled or an image file) as uint8 (H, W, C), resized by `scale`."""
  if name in BUNDLED:
    import skimage.data  # pylint: disable=g-import-not-at-top

    image = Image.fromarray(np.asarray(getattr(skimage.data, name)()))
  else:
    path = os.path.expanduser(name)
    if not os.path.isfile(path):
      raise DataError(
        f"Texture exemplar {name!r} is neither bundled ({', '.join(BUNDLED)}) nor an image file."
      )
    try:
      image = Image.open(path)
      image.load()
    except OSError as e:
      raise DataError(f"Texture exemplar {name} cannot be read as an image: {e}") from e
    image = image.convert("L" if image.mode in ("L", "LA", "I", "I;16", "1") else "RGB")
  if scale != 1.0:
    if not 0 < scale <= 4:
      raise DataError(f"Exemplar scale {scale} must lie in (0, 4].")
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.LANCZOS)
  array = np.asarray(image, np.uint8)
  return array[..., None] if array.ndim == 2 else array


@dataclasses.dataclass
class ExemplarConfig(tfds.core.BuilderConfig):
  """One exemplar: a bundled texture's name, or an image file's `path`."""

  path: str = ""

  @property
  def exemplar(self) -> str:
    return self.path or self.name


def _file_config(path: str) -> ExemplarConfig:
  if not os.path.isfile(os.path.expanduser(path)):
    raise DataError(
      f"Dataset texture_crops/{path}: the exemplar is neither bundled "
      f"({', '.join(BUNDLED)}) nor an image file."
    )
  with open(os.path.expanduser(path), "rb") as f:
    digest = hashlib.sha1(f.read()).hexdigest()[:12]
  return ExemplarConfig(name=f"file-{digest}", path=os.path.abspath(os.path.expanduser(path)))


class TextureCrops(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Random crops of one texture exemplar."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [ExemplarConfig(name=n, description=f"skimage.data.{n}") for n in BUNDLED]
  SPLIT_SIZES = {"train": CROPS_TRAIN, "test": CROPS_TEST}

  @classmethod
  def variant_config(cls, variant: str) -> ExemplarConfig:
    """The builder config of `texture_crops/<variant>`: bundled or a file."""
    for config in cls.BUILDER_CONFIGS:
      if config.name == variant:
        return config
    return _file_config(variant)

  def __init__(self, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _exemplar(self) -> np.ndarray:
    image = load_exemplar(self.builder_config.exemplar, EXEMPLAR_SCALE)
    if min(image.shape[:2]) < CROP:
      raise DataError(
        f"Texture exemplar {self.builder_config.exemplar} is {image.shape[1]}x{image.shape[0]} at "
        f"scale {EXEMPLAR_SCALE}: it needs at least {CROP} pixels a side for {CROP}-px crops."
      )
    return image

  def _info(self) -> tfds.core.DatasetInfo:
    channels = self._exemplar().shape[-1]
    features = {"image": tfds.features.Tensor(shape=(CROP, CROP, channels), dtype=np.uint8)}
    return tfds.core.DatasetInfo(
      builder=self,
      description=f"{CROP}x{CROP} random crops of the texture {self.builder_config.exemplar}.",
      features=tfds.features.FeaturesDict(features),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    return {split: self._generate_examples(split) for split in self.SPLIT_SIZES}

  def _generate_examples(self, split: str):
    image = self._exemplar()
    h, w = image.shape[:2]
    for i in range(self.SPLIT_SIZES[split]):
      rng = np.random.default_rng([_SEED, int(split == "test"), i])
      top, left = int(rng.integers(0, h - CROP + 1)), int(rng.integers(0, w - CROP + 1))
      yield i, {"image": np.ascontiguousarray(image[top : top + CROP, left : left + CROP])}

  def damage(self) -> str | None:
    """What is wrong with the prepared files (None if every record reads back)."""
    shape = self.info.features["image"].shape
    return embedded.damage(self, self.SPLIT_SIZES, {"image": tuple(shape)})


BUILDERS = {"texture_crops": TextureCrops}
