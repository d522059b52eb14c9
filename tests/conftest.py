"""Shared fixtures: the embedded datasets and one smoke run per family, made once
per test session and shared by every pytest-xdist worker.

The main pytest process makes one session folder (`IMGEN_TEST_SHARED`) that its
workers and the `main.py` subprocesses of the tests inherit through the
environment. It holds:
- `xla-cache/`: the persistent XLA compilation cache, so the many runs of the
  same smoke configs compile each program once (in any process);
- `tfds/`: the embedded datasets, prepared once (imgen's own preparation lock
  makes the other workers wait for the first);
- `runs/<name>/`: training runs several tests read (one smoke run per family,
  and a few others), trained by the first worker that asks for one while the
  others wait on its lock file, then read by all.
"""

import os
import shutil
import tempfile

from helpers import shared_training
from helpers import smoke_config
import jax
import pytest

from imgen import data
from imgen.core import runtime

# The suite compiles far more than it runs (tiny models, a few steps each): LLVM at -O1
# instead of XLA's default -O2 compiles a smoke U-Net's step ~15% faster. Set before any
# backend starts, so this process, its workers and their main.py subprocesses all compile
# this way; users' runs keep the default. Numerics that tests compare are computed under
# the same setting; the initialisation test compares against -O2 explicitly.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=1"
  ).strip()
runtime.configure_xla()  # The CPU settings main.py makes, before any test computes.

_OWNS_SHARED = "IMGEN_TEST_SHARED" not in os.environ
if _OWNS_SHARED:
  os.environ["IMGEN_TEST_SHARED"] = tempfile.mkdtemp(prefix="imgen-tests-")
SHARED = os.environ["IMGEN_TEST_SHARED"]
_CACHE = {
  "jax_compilation_cache_dir": os.path.join(SHARED, "xla-cache"),
  "jax_persistent_cache_min_compile_time_secs": 0,
  "jax_persistent_cache_min_entry_size_bytes": 0,
  # A size limit turns on JAX's file lock around cache reads and writes. Without
  # it an entry is written in place while another process may read it, and
  # deserialising a half-written executable crashed a worker (a segfault).
  "jax_compilation_cache_max_size": 64 * 2**30,
}


def pytest_sessionstart(session):
  del session
  for name, value in _CACHE.items():
    jax.config.update(name, value)
    os.environ[name.upper()] = str(value)  # For the main.py subprocesses.
  _skip_eviction_scans()


def _skip_eviction_scans() -> None:
  """With a size limit, every cache write first stats every entry (0.14 s
  with the suite's ~3,500 entries, under the lock that every other process
  waits on); the limit is there only for the lock, so this process skips the
  scan. A private JAX function: if it is gone, the scan simply stays."""
  from jax._src import lru_cache  # pylint: disable=g-import-not-at-top

  if hasattr(lru_cache.LRUCache, "_evict_if_needed"):
    lru_cache.LRUCache._evict_if_needed = lambda self, additional_size=0: None


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
  run per family in the session (`shared_training`)."""
  runs = {}

  def run(family: str):
    if family not in runs:
      config = smoke_config(family, data_dir)
      runs[family] = (config, *shared_training(f"smoke-{family}", config))
    return runs[family]

  return run


# The slowest tests first, those of different families next to each other (the
# workers start on them together and would otherwise wait for the same smoke
# run); with one test at a time per worker (`--maxschedchunk=1` in pyproject),
# no worker is left with a long test at the end. Substrings of test ids.
SLOW_FIRST = (
  "test_two_processes_train_as_one_of_four_devices",
  "test_scanned_calls_compute_the_same_run_and_resume_bitwise[text_to_image]",
  "test_text_sample_mode_with_prompts_and_prompts_mode",
  "test_speech_prompts_mode_classifies_samples_of_held_out_voices",
  "test_four_replicas_compute_what_one_computes[text_to_image]",
  "test_the_conditional_model_trains_samples_given_classes_and_inpaints",
  "test_the_paper_config_trains_on_a_cifar_shaped_mock",
  "test_edm_trains_and_its_samplers_draw_through_the_family",
  "test_new_objectives_on_four_devices[resnet_hinge]",
  "test_four_replicas_compute_what_one_computes[distill]",
  "test_progressive_rounds_hand_the_student_to_the_next_teacher",
  "test_bfloat16_step_keeps_float32_state_and_close_losses[text_to_image]",
  "test_new_objectives_resume_bitwise[resnet_hinge]",
  "test_bfloat16_step_keeps_float32_state_and_close_losses[speech_to_image]",
  "test_guidance_scale_zero_is_the_unconditional_model",
  "test_texture_mode_writes_scores_and_the_grid",
  "test_compose_mode_scores_every_blend",
  "test_the_segmentation_step_benchmark_runs",
  "test_the_sngan_step_benchmark_runs",
  "test_four_replicas_compute_what_one_computes[segment]",
  "test_sigterm_then_sigkill_then_resume_is_bitwise_identical",
  "test_the_suite_measures_a_family",
  "test_the_train_step_benchmark_runs",
)


def pytest_collection_modifyitems(session, config, items):
  del session, config

  def rank(item):
    return next((i for i, slow in enumerate(SLOW_FIRST) if slow in item.nodeid), len(SLOW_FIRST))

  items.sort(key=rank)  # Stable: the rest keep their order.
