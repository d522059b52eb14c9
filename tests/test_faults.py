"""Faults a run must survive, tried as a user meets them: kill signals, damaged
checkpoints and data, non-finite updates."""

import glob
import logging
import os
import signal
import subprocess
from unittest import mock

import flax
from helpers import COVERED_BY_TEXT
from helpers import FAMILIES
from helpers import ROOT
from helpers import assert_trees_equal
from helpers import final_state
from helpers import main_command
from helpers import needs_extra
from helpers import saved_state
from helpers import smoke_config
import jax
import numpy as np
import pytest

from imgen import data
from imgen.core import checkpoints
from imgen.core import guards
from imgen.core.errors import ConfigError
from imgen.core.errors import DataError
from imgen.data import sources
from imgen.evaluation.experiment import Experiment
from imgen.modes import train

# A run long enough to be killed in the middle: 150 steps, checkpoints every 20.
LONG = dict(num_steps=150, checkpoint_every=20, log_every=10)
LONG_FLAGS = [f"--config.train.{k}={v}" for k, v in LONG.items()]


def _config(family, data_dir, **train_overrides):
  config = smoke_config(family, data_dir, **train_overrides)
  config.eval.update(every_steps=1000, sample_every=1000)
  return config


def _start(family, workdir, data_dir):
  cmd = main_command(
    family,
    workdir,
    data_dir,
    "--config.eval.every_steps=1000",
    "--config.eval.sample_every=1000",
    *LONG_FLAGS,
  )
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.Popen(
    cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
  )


def _run_until(process, marker: str, sig: int) -> str:
  """Reads the run's log until `marker`, sends `sig`, returns all it logged."""
  lines = []
  for line in process.stderr:
    lines.append(line)
    if marker in line:
      process.send_signal(sig)
      break
  lines += process.stderr.readlines()
  process.wait(timeout=120)
  return "".join(lines)


def test_sigterm_then_sigkill_then_resume_is_bitwise_identical(data_dir, tmp_path):
  """Real signals to a real main.py, on the GAN (every family's in-process
  resume is checked in tests/test_train.py; the launcher's in test_distributed.py)."""
  family = "gan"
  workdir = str(tmp_path / "killed")
  # SIGTERM: the run finishes its step, saves it, says so and exits 0.
  process = _start(family, workdir, data_dir)
  log = _run_until(process, "step 30/150", signal.SIGTERM)
  assert process.returncode == 0 and "Stopped by SIGTERM after step" in log, log[-3000:]
  stopped = int(log.split("Stopped by SIGTERM after step ")[1].split(";")[0])
  assert stopped >= 30
  assert str(stopped) in os.listdir(os.path.join(workdir, "checkpoints"))
  assert "Traceback" not in log

  # SIGKILL: no chance to save; the next start resumes from the newest checkpoint.
  process = _start(family, workdir, data_dir)
  log = _run_until(process, "step 100/150", signal.SIGKILL)
  assert process.returncode == -signal.SIGKILL
  assert f"Resuming from the checkpoint of step {stopped}" in log

  train.train_and_evaluate(_config(family, data_dir, **LONG), workdir)
  straight = str(tmp_path / "straight")
  train.train_and_evaluate(_config(family, data_dir, **LONG), straight)
  killed_state, step = saved_state(workdir)
  assert step == 150
  assert_trees_equal(killed_state, saved_state(straight)[0])


def _damage(workdir: str, step: int) -> None:
  for path in glob.glob(
    os.path.join(workdir, "checkpoints", str(step), "**", "d", "*"), recursive=True
  ):
    with open(path, "r+b") as f:
      f.truncate(8)


def test_damaged_checkpoint_falls_back_to_an_intact_one(data_dir, tmp_path, caplog):
  workdir = str(tmp_path / "run")
  config = _config("gan", data_dir)
  train.train_and_evaluate(config, workdir)  # Checkpoints at 3 and 6.
  straight = final_state(config, workdir)[0]
  _damage(workdir, 6)
  # Leftovers of a save cut short by a crash are never taken for a checkpoint.
  os.makedirs(os.path.join(workdir, "checkpoints", "9.orbax-checkpoint-tmp-1"))
  config.train.num_steps = 7
  with caplog.at_level(logging.WARNING):
    train.train_and_evaluate(config, workdir)  # Resumes from 3, redoes 4..6, then 7.
  assert "The checkpoint of step 6 is damaged" in caplog.text
  assert glob.glob(os.path.join(workdir, "damaged", "6-*"))
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6", "7"]
  config.train.num_steps = 6
  manager = checkpoints.make_manager(workdir, keep=3)
  redone = checkpoints.restore(manager, straight, 6)
  manager.close()
  assert_trees_equal(redone, straight)  # Step 6 again, exactly.

  for step in (3, 6, 7):
    _damage(workdir, step)
  with pytest.raises(ConfigError, match="No intact checkpoint in .*Start over in a new --workdir"):
    train.train_and_evaluate(config, workdir)


def test_a_checkpoint_with_other_empty_fields_is_a_config_error_not_damage(tmp_path):
  """A state that gained (or lost) a field holding no arrays, as a family's state
  may between versions: the arrays all fit, the tree does not. Reading it is a
  ConfigError naming the field, and a resume leaves the checkpoint where it is."""
  saved = {"params": {"w": np.ones(3, np.float32)}, "ema": np.zeros(2, np.float32)}
  manager = checkpoints.make_manager(str(tmp_path), keep=2)
  checkpoints.save(manager, 4, saved)
  manager.wait_until_finished()
  grown = {**saved, "target": {}}
  with pytest.raises(
    ConfigError, match=r"other fields than .*\n  target: checkpoint absent, config empty"
  ):
    checkpoints.restore(manager, grown, 4)
  with pytest.raises(ConfigError, match="target: checkpoint absent"):
    checkpoints.restore_latest(manager, grown)
  assert manager.all_steps() == [4] and not os.path.exists(tmp_path / "damaged")
  assert_trees_equal(checkpoints.restore(manager, saved, 4), saved)
  manager.close()


def _poison_step(monkeypatch, step: int):
  """Batch `step` of every run gets a NaN pixel, as a broken input would."""
  original = Experiment.train_batches

  def poisoned(self, start_step):
    for i, batch in enumerate(original(self, start_step), start=start_step + 1):
      if i == step:
        image = batch["image"].copy()
        image.flat[0] = np.nan
        batch = {**batch, "image": image}
      yield batch

  monkeypatch.setattr(Experiment, "train_batches", poisoned)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in COVERED_BY_TEXT])
def test_nonfinite_update_stops_the_run_and_keeps_the_last_good_checkpoint(
  smoke_run, data_dir, tmp_path, monkeypatch, family
):
  needs_extra(family)
  smoke_run(family)  # The same train step (6 steps, checkpoints every 3): compiled once.
  config = _config(family, data_dir)
  if family == "vae":
    config.model.likelihood = "gaussian"  # Binarising would turn the NaN pixel into a 0.
  _poison_step(monkeypatch, 5)
  workdir = str(tmp_path / "run")
  with pytest.raises(
    guards.Diverged, match=r"Non-finite .*=nan.* at step 5: .*checkpoint \(step 3\)"
  ):
    train.train_and_evaluate(config, workdir)
  state, step = saved_state(workdir)
  assert step == 3
  assert all(np.isfinite(x).all() for x in state)


def test_nonfinite_updates_can_be_skipped(data_dir, tmp_path, monkeypatch, caplog):
  config = _config("gan", data_dir)
  config.train.on_nonfinite = "skip"
  _poison_step(monkeypatch, 5)
  with caplog.at_level(logging.WARNING):
    metrics = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert "Skipped 1 non-finite updates at steps [5]" in caplog.text
  assert all(np.isfinite(v) for v in metrics.values())
  state, step = final_state(config, str(tmp_path / "run"))
  assert step == 6 and int(state.step) == 6
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))


def test_guard_leaves_finite_updates_bit_for_bit():
  def step(state, batch, key):
    del key
    new = state.replace(step=state.step + 1, net=state.net * batch)
    return new, {"loss": jax.numpy.sum(new.net)}

  @flax.struct.dataclass
  class S:
    step: jax.Array
    net: jax.Array

  state = S(jax.numpy.array(0), jax.numpy.array([1.5, 2.0]))
  new, metrics = jax.jit(guards.guard_nonfinite(step))(state, jax.numpy.array([3.0, 0.1]), None)
  np.testing.assert_array_equal(new.net, state.net * np.array([3.0, 0.1], np.float32))
  assert metrics["nonfinite"] == 0 and int(new.step) == 1
  bad, metrics = jax.jit(guards.guard_nonfinite(step))(state, jax.numpy.array([np.inf, 1.0]), None)
  np.testing.assert_array_equal(bad.net, state.net)  # Not applied...
  assert metrics["nonfinite"] == 1 and int(bad.step) == 1  # ...but the step is counted.


def test_damaged_embedded_dataset_is_rebuilt(tmp_path, caplog):
  data_dir = str(tmp_path / "tfds")
  data.get_builder("sklearn_digits", data_dir)
  (record,) = glob.glob(os.path.join(data_dir, "sklearn_digits", "*", "*train.array_record*"))
  os.truncate(record, os.path.getsize(record) // 2)
  with caplog.at_level(logging.WARNING):
    builder = data.get_builder("sklearn_digits", data_dir)
  assert "sklearn_digits" in caplog.text and "is damaged" in caplog.text
  assert builder.damage() is None and len(builder.as_data_source(split="train")) == 1437
  (info,) = glob.glob(os.path.join(data_dir, "sklearn_digits", "*", "dataset_info.json"))
  with open(info, "w") as f:
    f.write("{not json")
  assert data.get_builder("sklearn_digits", data_dir).damage() is None


def test_prepared_data_is_read_through_once_per_version_of_its_files(tmp_path):
  data_dir = str(tmp_path / "tfds")
  data.get_builder("sklearn_digits", data_dir)  # Prepared: nothing to verify yet.
  readings = []
  original = sources.EMBEDDED["sklearn_digits"]

  class Counted(original):
    def damage(self):
      readings.append(1)
      return super().damage()

  with mock.patch.dict(sources.EMBEDDED, {"sklearn_digits": Counted}):
    for _ in range(3):
      data.get_builder("sklearn_digits", data_dir)
    assert len(readings) == 1  # Read through once, then stamped.
    (record,) = glob.glob(os.path.join(data_dir, "sklearn_digits", "*", "*test.array_record*"))
    os.utime(record, ns=(0, 0))  # The same size, another version.
    data.get_builder("sklearn_digits", data_dir)
    data.get_builder("sklearn_digits", data_dir)
  assert len(readings) == 2


def test_preparing_data_deletes_only_what_it_verified_as_damaged(tmp_path, caplog):
  """A dataset that cannot be made (an exemplar that is not an image) and a
  failure that is not damage (an I/O error opening a prepared dataset) are
  one-line errors that leave the prepared files where they are."""
  data_dir = str(tmp_path / "tfds")
  readme = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")
  with caplog.at_level(logging.WARNING), pytest.raises(DataError) as e:
    data.get_builder(f"texture_crops/{readme}", data_dir)
  assert "\n" not in str(e.value) and "README.md" in str(e.value)
  assert "damaged" not in caplog.text

  data.get_builder("sklearn_digits", data_dir)
  (info,) = glob.glob(os.path.join(data_dir, "sklearn_digits", "*", "dataset_info.json"))
  original = sources.EMBEDDED["sklearn_digits"]

  class Unreachable(original):
    def __init__(self, **kwargs):
      raise OSError(5, "Input/output error")

  with mock.patch.dict(sources.EMBEDDED, {"sklearn_digits": Unreachable}):
    with caplog.at_level(logging.WARNING), pytest.raises(DataError, match="Input/output error"):
      data.get_builder("sklearn_digits", data_dir)
  assert os.path.isfile(info) and "damaged" not in caplog.text
  assert data.get_builder("sklearn_digits", data_dir).damage() is None
