"""Shared fixtures: the embedded datasets and one smoke run per family, made once
per test session and shared by every pytest-xdist worker.

The main pytest process makes one session folder (`IMGEN_TEST_SHARED`) that its
workers and the `main.py` subprocesses of the tests inherit through the
environment. It holds:
- `xla-cache/`: the persistent XLA compilation cache, so the many runs of the
  same smoke configs compile each program once (in any process);
- `tfds/`: the embedded datasets, prepared once (imgen's own preparation lock
  makes the other workers wait for the first);
- `smoke/<family>/`: one smoke run per family, trained by the first worker that
  asks for it while the others wait on its lock file, then read by all.
"""

import json
import os
import shutil
import tempfile

from helpers import file_lock
from helpers import smoke_config
import jax
import pytest

from imgen import data
from imgen import runtime
from imgen import train

runtime.configure_xla()  # The CPU settings main.py makes, before any test computes.

_OWNS_SHARED = "IMGEN_TEST_SHARED" not in os.environ
if _OWNS_SHARED:
  os.environ["IMGEN_TEST_SHARED"] = tempfile.mkdtemp(prefix="imgen-tests-")
SHARED = os.environ["IMGEN_TEST_SHARED"]
_CACHE = {
  "jax_compilation_cache_dir": os.path.join(SHARED, "xla-cache"),
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
  if _OWNS_SHARED:  # The main process, after its workers.
    shutil.rmtree(SHARED, ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir():
  path = os.path.join(SHARED, "tfds")
  data.get_builder("embedded_mnist", path)
  return path


@pytest.fixture(scope="session")
def cnn_workdir(smoke_run):
  """A smoke-sized classifier, the feature network of the sample-quality tests:
  the CNN's smoke run (reading it as a feature network writes nothing to it)."""
  return smoke_run("cnn")[1]


@pytest.fixture(scope="session")
def smoke_run(data_dir):
  """`smoke_run(family)` -> (config, workdir, returned metrics) of the one smoke
  run per family in the session, shared by every test (and worker) that
  inspects it. Tests may add files to its workdir, never change its checkpoints."""
  runs = {}

  def run(family: str):
    if family not in runs:
      config = smoke_config(family, data_dir)
      workdir = os.path.join(SHARED, "smoke", family)
      done = os.path.join(SHARED, "smoke", f"{family}.json")
      with file_lock(os.path.join(SHARED, "smoke", f"{family}.lock")):
        if not os.path.exists(done):
          shutil.rmtree(workdir, ignore_errors=True)  # A worker that died mid-run.
          metrics = train.train_and_evaluate(config, workdir)
          with open(done + ".tmp", "w") as f:
            json.dump(metrics, f)
          os.replace(done + ".tmp", done)
      with open(done) as f:
        runs[family] = (config, workdir, json.load(f))
    return runs[family]

  return run
