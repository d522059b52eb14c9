"""Datasets (embedded and TFDS catalog) and the input pipeline."""

from imgen.data.pipeline import ImageSpec
from imgen.data.pipeline import image_spec
from imgen.data.pipeline import make_eval_iterator
from imgen.data.pipeline import make_train_iterator
from imgen.data.pipeline import prefetch_to_device
from imgen.data.sources import get_builder

__all__ = [
  "ImageSpec",
  "get_builder",
  "image_spec",
  "make_eval_iterator",
  "make_train_iterator",
  "prefetch_to_device",
]
