"""`spoken_mnist`: each embedded MNIST digit paired with a spoken clip of its
class, for speech -> image (a TFDS builder prepared on first use, offline).

Train pairs the 4,000 train digits of `embedded_mnist` with clips of
`spoken_digits`' train split (8 voices); test pairs the 1,000 test digits
with clips of its test split (the 2 held-out voices), so the held-out
evaluation hears voices that training never did. Digit i's clip is drawn
uniformly among its split's clips of the same class by a generator seeded by
(split, i): the same pairs on every machine. Each clip serves about 1.7 train
digits. `spoken_mnist/tiny`: the first 64 train and 32 test digits, paired
with `spoken_digits/tiny`. Needs the optional `speech` extra (eSpeak NG,
GPL-3.0) to prepare `spoken_digits` first.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from imgen.data import embedded
from imgen.data import speech

_SEED = 19520101  # Fixed forever: changing it changes every file.


@dataclasses.dataclass
class SpokenMnistConfig(tfds.core.BuilderConfig):
  speech: str = "spoken_digits"
  train: int = 4000
  test: int = 1000


class SpokenMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """MNIST digits with a clip of their class said by an eSpeak NG voice."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
    SpokenMnistConfig(name="full", description="4,000 train and 1,000 test pairs."),
    SpokenMnistConfig(
      name="tiny",
      description="The first 64 train and 32 test digits, with spoken_digits/tiny.",
      speech="spoken_digits/tiny",
      train=64,
      test=32,
    ),
  ]

  READS_DATASETS = True  # `imgen.data.sources` passes its get_builder (the clips' builder).

  def __init__(self, *, get_builder=None, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    self._root = kwargs.get("data_dir")
    self._get_builder = get_builder
    super().__init__(**kwargs)

  @property
  def SPLIT_SIZES(self) -> dict[str, int]:  # noqa: N802 (the embedded builders' name)
    return {"train": self.builder_config.train, "test": self.builder_config.test}

  def _info(self) -> tfds.core.DatasetInfo:
    scalar = lambda: tfds.features.Tensor(shape=(), dtype=np.int32)
    features = {
      "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
      "label": tfds.features.ClassLabel(num_classes=10),
      "audio": tfds.features.Tensor(shape=(speech.CLIP_SAMPLES,), dtype=np.int16, encoding="bytes"),
      "voice": scalar(),  # Index into speech.VOICES.
      "clip": scalar(),  # Position of the clip in its spoken_digits split's data source.
    }
    return tfds.core.DatasetInfo(
      builder=self,
      description="MNIST digits paired with eSpeak NG clips of their class.",
      features=tfds.features.FeaturesDict(features),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    clips = self._get_builder(self.builder_config.speech, self._root)
    images, labels = embedded.EmbeddedMnist.load()
    indices = dict(zip(("train", "test"), embedded.mnist_split(labels), strict=True))
    return {
      split: self._generate_examples(split, images, labels, indices[split], clips)
      for split in ("train", "test")
    }

  def _generate_examples(self, split, images, labels, indices, clips):
    source = clips.as_data_source(split=split)
    clip_labels = np.array([source[i]["label"] for i in range(len(source))])
    by_class = [np.flatnonzero(clip_labels == d) for d in range(10)]
    for i, index in enumerate(indices[: self.SPLIT_SIZES[split]]):
      label = int(labels[index])
      rng = np.random.default_rng([_SEED, int(split == "test"), i])
      clip = int(rng.choice(by_class[label]))
      example = source[clip]
      yield (
        i,
        {
          "image": images[index],
          "label": label,
          "audio": np.asarray(example["audio"], np.int16),
          "voice": int(example["voice"]),
          "clip": clip,
        },
      )

  def damage(self) -> str | None:
    """What is wrong with the prepared files (None if every record reads back)."""
    return embedded.damage(
      self, self.SPLIT_SIZES, {"image": (28, 28, 1), "audio": (speech.CLIP_SAMPLES,)}
    )


BUILDERS = {"spoken_mnist": SpokenMnist}
