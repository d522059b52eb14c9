"""Shared fixtures: the embedded datasets, prepared once per test session, and
a smoke-sized classifier that serves as the feature network of the metrics."""

from helpers import smoke_config
import pytest

from imgen import data
from imgen import runtime
from imgen import train

runtime.configure_xla()  # The CPU settings main.py makes, before any test computes.


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  data.get_builder("embedded_mnist", path)
  return path


@pytest.fixture(scope="session")
def cnn_workdir(smoke_run):
  """A smoke-sized classifier, the feature network of the sample-quality tests:
  the CNN's smoke run (reading it as a feature network writes nothing to it)."""
  return smoke_run("cnn")[1]


@pytest.fixture(scope="session")
def smoke_run(data_dir, tmp_path_factory):
  """`smoke_run(family)` -> (config, workdir, returned metrics) of one smoke run
  per family, shared by the tests that inspect it."""
  runs = {}

  def run(family: str):
    if family not in runs:
      config = smoke_config(family, data_dir)
      workdir = str(tmp_path_factory.mktemp(f"smoke-{family}"))
      runs[family] = (config, workdir, train.train_and_evaluate(config, workdir))
    return runs[family]

  return run
