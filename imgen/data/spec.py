"""What a batch holds: the named fields of a dataset, read from its TFDS features.

Each feature becomes a field of one kind, which decides how the pipeline turns
it into model input. Fields keep their feature names, but for the main image
(the feature `data.image_key`), which is always `image` in a batch.
- `image`: the main image, and any other uint8 (height, width, channels)
  tensor of the same height and width: float32 in [-1, 1] at the model size
  (antialiased resize or padding, `data.resize`);
- `label`: a `ClassLabel` or an integer scalar: int32;
- `mask`: an integer (height, width) tensor of the image's height and width,
  e.g. a segmentation: int32 at the model size, resized by nearest neighbour
  (never interpolated) or padded with 0;
- `tensor`: any other fixed-size number array: float32 (or int32), as stored.
Features of no fixed size (text, nested sequences) are not carried. Held-out
batches also carry `VALID`, 1 for real rows and 0 for padding.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from imgen.core.errors import DataError

IMAGE, LABEL, MASK, TENSOR = "image", "label", "mask", "tensor"
VALID = "_valid"  # Padding validity of held-out rows; no dataset may have a feature of this name.


@dataclasses.dataclass(frozen=True)
class ImageSpec:
  """The model-side image format: square `size`, `channels`, in [-1, 1]."""

  size: int
  channels: int

  @property
  def shape(self) -> tuple[int, int, int]:
    return (self.size, self.size, self.channels)


IMAGE_FIELD = "image"  # The batch name of the main image, whatever its feature is called.


@dataclasses.dataclass(frozen=True)
class Field:
  kind: str
  source: str  # The TFDS feature it is read from.
  stored_shape: tuple[int, ...]
  dtype: str  # As stored.
  num_classes: int | None = None  # Labels from a ClassLabel feature.

  @property
  def stored_bytes(self) -> int:
    return int(np.prod(self.stored_shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """The fields of a dataset, by batch name, and the square size its images and masks take."""

  size: int
  fields: dict[str, Field]

  @property
  def image(self) -> ImageSpec:
    """The main image (`batch["image"]`) as the model sees it."""
    return ImageSpec(self.size, self.fields[IMAGE_FIELD].stored_shape[-1])

  @property
  def num_classes(self) -> int | None:
    """Classes of the `label` field, if the dataset has one from a ClassLabel."""
    label = self.fields.get("label")
    return label.num_classes if label is not None and label.kind == LABEL else None

  def model_shape(self, name: str) -> tuple[int, ...]:
    """The shape of one example's field in a batch."""
    field = self.fields[name]
    if field.kind == IMAGE:
      return (self.size, self.size, field.stored_shape[-1])
    if field.kind == MASK:
      return (self.size, self.size)
    return field.stored_shape

  @classmethod
  def of_images(cls, size: int, channels: int, num_classes: int | None = None) -> "DataSpec":
    """Images (and, with `num_classes`, labels) without a dataset: for benchmarks and tests."""
    fields = {IMAGE_FIELD: Field(IMAGE, "image", (size, size, channels), "uint8")}
    if num_classes:
      fields["label"] = Field(LABEL, "label", (), "int64", num_classes)
    return cls(size, fields)

  @classmethod
  def from_builder(cls, builder: tfds.core.DatasetBuilder, image_key: str, size: int) -> "DataSpec":
    features = builder.info.features
    if image_key not in features:
      raise DataError(
        f"Dataset {builder.name!r} has no feature {image_key!r}; it has "
        f"{sorted(features.keys())}. Set config.data.image_key."
      )
    if VALID in features:
      raise DataError(f"Dataset {builder.name!r} has a feature named {VALID!r}, which imgen uses.")
    if image_key != IMAGE_FIELD and IMAGE_FIELD in features:
      raise DataError(
        f"Dataset {builder.name!r} has a feature {IMAGE_FIELD!r} besides data.image_key="
        f"{image_key!r}; imgen calls the main image {IMAGE_FIELD!r} in a batch. Set "
        f"--config.data.image_key={IMAGE_FIELD}, or rename the feature."
      )
    image_shape = _fixed_shape(features[image_key])
    if image_shape is None or len(image_shape) != 3:
      raise DataError(
        f"Feature {image_key!r} of {builder.name!r} has shape {features[image_key].shape}; "
        "imgen needs fixed-size images (height, width, channels)."
      )
    fields = {}
    for name, feature in features.items():
      kind = _kind(feature, image_shape[:2]) if name != image_key else IMAGE
      if kind is not None:
        classes = feature.num_classes if isinstance(feature, tfds.features.ClassLabel) else None
        dtype = np.dtype(feature.np_dtype).name
        batch_name = IMAGE_FIELD if name == image_key else name
        fields[batch_name] = Field(kind, name, _fixed_shape(feature), dtype, classes)
    return cls(size, fields)


def _fixed_shape(feature) -> tuple[int, ...] | None:
  shape = getattr(feature, "shape", None)
  if not isinstance(shape, tuple) or any(d is None or d < 0 for d in shape):
    return None
  return shape


def _kind(feature, image_hw: tuple[int, int]) -> str | None:
  """The field kind of a feature that is not the main image; None: not carried."""
  shape = _fixed_shape(feature)
  dtype = getattr(feature, "np_dtype", None)
  if shape is None or dtype is None or not np.issubdtype(dtype, np.number):
    return None
  integer = np.issubdtype(dtype, np.integer)
  if isinstance(feature, tfds.features.ClassLabel) or (integer and shape == ()):
    return LABEL
  if np.dtype(dtype) == np.uint8 and len(shape) == 3 and shape[:2] == image_hw:
    return IMAGE
  if integer and shape == image_hw:
    return MASK
  return TENSOR
