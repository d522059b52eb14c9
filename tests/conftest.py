"""Shared fixtures: the embedded datasets, prepared once per test session."""

import pytest

from imgen import data
from imgen import runtime

runtime.configure_xla()  # The CPU settings main.py makes, before any test computes.


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  data.get_builder("embedded_mnist", path)
  return path
