"""Shared fixtures: the embedded datasets, prepared once per test session, and
a smoke-sized classifier that serves as the feature network of the metrics.

The test run keeps one persistent XLA compilation cache, which its workers and
the `main.py` subprocesses of the tests share through the environment: the many
runs of the same smoke configs compile each program once (measured: the
diffusion smoke run takes 40 s instead of 75 s once its programs are cached).
"""

import os
import shutil
import tempfile

from helpers import smoke_config
import jax
import pytest

from imgen import data
from imgen import runtime
from imgen import train

runtime.configure_xla()  # The CPU settings main.py makes, before any test computes.

# One folder per test run: the first process to load this file (pytest's main
# process) makes it, and its pytest-xdist workers inherit it through the environment.
_OWNS_CACHE = "IMGEN_TEST_XLA_CACHE" not in os.environ
if _OWNS_CACHE:
  os.environ["IMGEN_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="imgen-test-xla-cache-")
_CACHE = {
  "jax_compilation_cache_dir": os.environ["IMGEN_TEST_XLA_CACHE"],
  "jax_persistent_cache_min_compile_time_secs": 0,
  "jax_persistent_cache_min_entry_size_bytes": 0,
}


def pytest_sessionstart(session):
  del session
  for name, value in _CACHE.items():
    jax.config.update(name, value)
    os.environ[name.upper()] = str(value)  # For the main.py subprocesses.


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  if _OWNS_CACHE:  # The main process, after its workers.
    shutil.rmtree(_CACHE["jax_compilation_cache_dir"], ignore_errors=True)


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
