"""Datasets (embedded and TFDS catalog), their fields, and the input pipeline."""

from imgen.data.pipeline import make_eval_iterator
from imgen.data.pipeline import make_train_iterator
from imgen.data.pipeline import prefetch_to_device
from imgen.data.sources import get_builder
from imgen.data.spec import VALID
from imgen.data.spec import DataSpec
from imgen.data.spec import ImageSpec

__all__ = [
  "VALID",
  "DataSpec",
  "ImageSpec",
  "get_builder",
  "make_eval_iterator",
  "make_train_iterator",
  "prefetch_to_device",
]
