"""End-to-end training runs of every registered family with its smoke config,
as a user would run them."""

import glob
import logging
import os
import shutil
import subprocess
import sys
from unittest import mock

from helpers import COVERED_BY_TEXT
from helpers import FAMILIES
from helpers import ROOT
from helpers import assert_trees_close
from helpers import assert_trees_equal
from helpers import final_state
from helpers import four_and_one_replicas
from helpers import main_command
from helpers import needs_extra
from helpers import nothing_compiled
from helpers import saved_state
from helpers import smoke_config
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from imgen import data
from imgen import modes
from imgen.core import guards
from imgen.core import parallel
from imgen.core import train_state
from imgen.core.errors import ConfigError
from imgen.core.errors import UserError
from imgen.evaluation.experiment import Experiment
from imgen.families import Evaluates
from imgen.families import Generates
from imgen.modes import train


@pytest.mark.parametrize("family", FAMILIES)
def test_smoke_run_writes_everything(smoke_run, family):
  needs_extra(family)
  config, workdir, metrics = smoke_run(family)
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  experiment = Experiment.create(config)
  assert set(experiment.family.headline(metrics)), "the progress line shows nothing"
  assert any(k.endswith("learning_rate") for k in metrics), sorted(metrics)
  if isinstance(experiment.family, Evaluates):
    assert any(k.startswith("test/") for k in metrics), sorted(metrics)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
  assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
  shown = experiment.family.show(
    experiment.family.init_state(experiment.keys.init),
    experiment.keys.sample,
    experiment.held_out(config.eval.grid_samples),
  )
  names = list(shown) + (["samples"] if isinstance(experiment.family, Generates) else [])
  assert names, "the family draws no images"
  for name in names:
    assert os.path.exists(os.path.join(workdir, "samples", f"{name}_0000006.png")), name
  assert os.path.exists(os.path.join(workdir, "config.json"))
  state, step = final_state(config, workdir)
  assert step == 6 and int(state.step) == 6


@pytest.mark.parametrize("family", ["gan", "diffusion"])
def test_initialisation_compiled_for_compile_time_gives_the_same_parameters(data_dir, family):
  """`TrainState.create` compiles the initialisation at LLVM -O1 on CPU: the same
  parameters, bit for bit, as XLA's default level, -O2, named here because the suite
  compiles at -O1 (tests/conftest.py) (a GAN with BatchNorm; a U-Net with its
  zero-initialised outputs, attention and embeddings)."""
  assert jax.default_backend() != "cpu" or train_state._init_compiler_options()
  experiment = Experiment.create(smoke_config(family, data_dir))
  fast = experiment.family.init_state(experiment.keys.init)
  default = {"xla_backend_optimization_level": 2}
  with mock.patch.object(train_state, "_init_compiler_options", lambda: default):
    default = experiment.family.init_state(experiment.keys.init)
  assert_trees_equal(fast, default)


def test_resuming_another_model_says_what_differs(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(smoke_config("gan", data_dir, num_steps=3), workdir)
  wider = smoke_config("gan", data_dir)
  wider.model.g_width = 16
  with pytest.raises(ConfigError, match=r"different model:\n  g\.params\..*checkpoint \("):
    train.train_and_evaluate(wider, workdir)


def test_dispatch_sizes_stop_at_every_log_save_and_eval_step():
  # Boundaries at multiples of 4 and 6, and the end (14).
  sizes = list(train.dispatch_sizes(0, 14, (4, 6), 3))
  assert sizes == [3, 1, 1, 1, 1, 1, 3, 1, 1, 1]
  ends = np.cumsum(sizes)
  assert {4, 6, 8, 12, 14} <= set(ends) and ends[-1] == 14
  assert list(train.dispatch_sizes(5, 12, (6,), 4)) == [1, 4, 1, 1]  # A resume at step 5.
  assert list(train.dispatch_sizes(0, 8, (4,), 1)) == [1] * 8
  assert list(train.dispatch_sizes(0, 8, (4, 0), 4)) == [4, 4]  # 0: evaluation turned off.


def test_the_host_dispatches_at_most_two_calls_ahead(data_dir, tmp_path, monkeypatch):
  """Metrics are read only at log steps; before each call past the second the host waits
  for the call two before it, so a stop signal waits for two calls, not a log interval."""
  waited, real = [], jax.block_until_ready
  monkeypatch.setattr(jax, "block_until_ready", lambda x: waited.append(x) or real(x))
  config = smoke_config("gan", data_dir, num_steps=6, log_every=6, checkpoint_every=6)
  config.eval.update(every_steps=0, sample_every=0)
  train.train_and_evaluate(config, str(tmp_path / "run"))
  assert len(waited) == 1 + (6 - train.IN_FLIGHT)  # The first call (timed), then calls 3-6.


def test_one_device_gradients_skip_the_all_reduce():
  """On one device the mean over devices is the gradient itself, bit for bit, and
  the step has no all-reduce (XLA's CPU backend runs one even over one device)."""
  loss = lambda w: (jnp.sum(jnp.sin(w) * jnp.arange(6.0)), None)
  step = lambda w: parallel.value_and_mean_grad(loss)(w)[1]
  w = jnp.linspace(-1.0, 1.0, 6)[None]
  mapped = jax.pmap(step, axis_name=parallel.AXIS, devices=jax.devices()[:1])
  np.testing.assert_array_equal(mapped(w)[0], jax.grad(lambda w: loss(w)[0])(w[0]))
  hlo = mapped.lower(w).compile().as_text()
  assert "all-reduce" not in hlo
  with_mean = lambda w: lax.pmean(jax.grad(lambda w: loss(w)[0])(w), parallel.AXIS)
  assert "all-reduce" in jax.pmap(with_mean, axis_name=parallel.AXIS).lower(w).compile().as_text()


def _checkpoint_of(workdir: str, step: int, into: str) -> None:
  """Copies `workdir`'s checkpoint of `step` into a fresh run folder `into`."""
  shutil.copytree(
    os.path.join(workdir, "checkpoints", str(step)), os.path.join(into, "checkpoints", str(step))
  )


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in COVERED_BY_TEXT])
def test_scanned_calls_compute_the_same_run_and_resume_bitwise(
  smoke_run, data_dir, tmp_path, caplog, family
):
  """Calls of 3 scanned steps (logs and saves at 3 and 6) against the
  smoke run's one step per call; then a run restored from the scanned run's
  mid-run checkpoint (step 3) and trained on to 6 ends in the scanned run's
  final state bit for bit: parameters, optimizer, EMA, schedule, statistics.
  Evaluation is off (0): these runs check the trainer's state, and the smoke run evaluates."""
  needs_extra(family)
  scanned, resumed = str(tmp_path / "scanned"), str(tmp_path / "resumed")
  config = smoke_config(family, data_dir, log_every=3, steps_per_dispatch=3)
  config.eval.update(every_steps=0, sample_every=0)
  metrics = train.train_and_evaluate(config, scanned)
  assert all(np.isfinite(v) for v in metrics.values())
  one = smoke_run(family)[1]
  assert_trees_close(saved_state(scanned)[0], saved_state(one)[0], rtol=1e-4, atol=1e-5)
  assert sorted(os.listdir(os.path.join(scanned, "checkpoints"))) == ["3", "6"]
  assert not os.path.exists(os.path.join(scanned, "samples"))

  _checkpoint_of(scanned, 3, resumed)
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(config, resumed)
  assert "Resuming from the checkpoint of step 3" in caplog.text
  state, step = saved_state(resumed)
  assert step == 6
  assert_trees_equal(state, saved_state(scanned)[0])


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in COVERED_BY_TEXT])
def test_four_replicas_compute_what_one_computes(smoke_run, data_dir, tmp_path, family):
  """The same global batches, noise, dropout masks, conditions dropped for
  guidance (global random draws), synchronised BatchNorm and gradient means:
  4 replicas of 1/4 of the batch each end where 1 replica of all of it does."""
  needs_extra(family)
  smoke_run(family)  # Prepares the data; its one-device program is in the cache.
  four, one = four_and_one_replicas(family, data_dir, str(tmp_path / "four.npz"))
  states = [k for k in one if not k.startswith("metrics/")]
  if family == "judge":
    # On layout_scenes 1.2.0's tiny scenes Adam's moments (the raw gradients of 2 images per
    # device) differ by up to 1.5e-3, ~1.5% of their scale, while the parameters, which Adam
    # normalises, agree within 5e-5: a ReLU or max-pool within rounding of its kink routes a
    # raw gradient elsewhere (tests/test_gan_zoo.py leaves the GANs' moments out alike). Every
    # leaf agrees within 1e-5 with judge.elastic=0, with the fields unconfined
    # (judge.elastic_ink=false), or with every row distorted (judge.elastic_share=1): the
    # fields themselves are the same draw on any number of devices.
    states = [k for k in states if "opt_state" not in k]
  assert states
  for name in states:  # Only the order of the reductions differs.
    np.testing.assert_allclose(four[name], one[name], rtol=1e-3, atol=1e-4, err_msg=name)
  losses = [k for k in one if k.startswith("metrics/") and "loss" in k]
  assert losses, sorted(one)
  # The consistency loss is a distance between two nearly equal networks' outputs: the
  # rounding of those outputs, ~1e-7, is ~1e-5 of their difference.
  rtol = 1e-4 if family == "distill" else 1e-5
  for name in losses:
    np.testing.assert_allclose(four[name], one[name], rtol=rtol, err_msg=name)


def _run_main(workdir, data_dir, devices, *overrides, family="gan"):
  env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(devices), "JAX_PLATFORMS": "cpu"}
  cmd = main_command(family, workdir, data_dir, *overrides)
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
  "field,value,message",
  [
    ("train.batch_size", 6, "batch_size 6 is not divisible by 4 devices"),
    ("data.name", "no_such_set", "Unknown dataset 'no_such_set'"),
    ("model.image_size", 30, "cannot be made by DCGAN"),
    ("eval.num_samples", 0, "eval.num_samples=0"),
    ("model.upsample", "fast", "model.upsample 'fast' is unknown"),
    ("data.train_split", "validation", "has splits ['test', 'train']"),
    ("train.on_nonfinite", "ignore", "train.on_nonfinite='ignore'; use one of"),
    ("model.dtype", "float64", "model.dtype 'float64'; use one of"),
    ("model.dtype", "float16", "model.dtype 'float16' needs loss scaling"),
    ("model.layer_forms", "gpu", "model.layer_forms='gpu'; use one of"),
    ("data.num_threads", 0, "data.num_threads=0; use 1 or more"),
    ("train.steps_per_dispatch", 0, "train.steps_per_dispatch=0"),
    ("eval.every_steps", -1, "eval.every_steps=-1; use a step count, or 0 for never"),
    # The other optimizer values are checked in test_optim.py.
    ("optim.d.learning_rate", 0.0, "optim.d.learning_rate=0.0; it must be a positive"),
  ],
)
def test_bad_configs_fail_with_a_clear_message(
  data_dir, tmp_path, monkeypatch, field, value, message
):
  """What main.py runs (`modes.run`), in this process: a UserError (main.py
  prints it as one line) before any program is built for the devices."""
  monkeypatch.setattr(jax, "device_count", lambda: 4)  # As if the run had 4 devices.
  config = smoke_config("gan", data_dir)
  group, name = field.rsplit(".", 1)
  config[group][name] = value
  with nothing_compiled(), pytest.raises(UserError) as error:
    modes.run("train", config, str(tmp_path / "bad"))
  assert message in str(error.value)


@pytest.mark.parametrize(
  "override,message",
  [
    ("--config.train.num_stepz=3", "num_stepz"),
    ("--config.train.batch_size=eight", "invalid literal for int()"),
  ],
)
def test_bad_overrides_fail_with_one_line_from_main(data_dir, tmp_path, override, message):
  """Mistakes in the flags themselves, caught by main.py's parser: one of the
  few tests that start a real main.py for an error."""
  result = _run_main(str(tmp_path / "bad"), data_dir, 1, override)
  assert result.returncode == 2
  assert message in result.stderr, result.stderr[-2000:]
  assert "Traceback" not in result.stderr


def test_bad_files_fail_with_a_clear_message(data_dir, tmp_path):
  """A config file that is missing or raises, and a workdir that cannot be created or written."""
  for config, message in [
    ("configs/no_such.py", "cannot load --config=configs/no_such.py: [Errno 2] No such file"),
    ("configs/gan.py:nope", "ValueError: Unknown variant 'nope' of configs/gan.py"),
  ]:
    result = subprocess.run(
      [sys.executable, "main.py", f"--config={config}"],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=120,
    )
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
  a_file = tmp_path / "a_file"
  a_file.write_text("")
  result = _run_main(str(a_file / "run"), data_dir, 1)
  assert result.returncode == 1, result.stderr[-2000:]
  assert f"--workdir={a_file}/run cannot be used: Not a directory" in result.stderr
  assert "Traceback" not in result.stderr
  with pytest.raises(ConfigError, match=f"--workdir={a_file} cannot be used: File exists"):
    modes.check_workdir(str(a_file))
  modes.check_workdir(str(tmp_path / "new" / "run"))  # Created, and writable.
  assert (tmp_path / "new" / "run").is_dir()


# The distill family's network is the diffusion U-Net, whose bfloat16 path text_to_image's
# run checks here (diffusion's and speech's steps are text_to_image's: COVERED_BY_TEXT);
# distillation adds no dtype handling of its own (the U-Net's output is float32).
@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in (*COVERED_BY_TEXT, "distill")])
def test_bfloat16_step_keeps_float32_state_and_close_losses(smoke_run, data_dir, family):
  """model.dtype=bfloat16 computes activations in bf16: the first step's losses
  stay within 2% of float32's, and parameters and optimizer state stay float32.
  The steps are the trainer's (guarded, donated): float32's is the smoke run's program."""
  needs_extra(family)
  smoke_run(family)
  results, initial = {}, None
  for dtype in ("float32", "bfloat16"):
    config = smoke_config(family, data_dir)
    config.model.dtype = dtype
    experiment = Experiment.create(config)
    guarded = guards.guard_nonfinite(experiment.family.make_train_step())
    step = parallel.pmap_step(guarded, donate=True)
    if initial is None:  # float32 parameters in both: bfloat16's initialisation is the same.
      initial = jax.device_get(experiment.family.init_state(experiment.keys.init))
    else:
      shapes = jax.eval_shape(experiment.family.init_state, experiment.keys.init)
      for x, y in zip(jax.tree.leaves(shapes), jax.tree.leaves(initial), strict=True):
        assert (x.shape, x.dtype) == (y.shape, y.dtype)
    state = parallel.replicate(initial)
    batch = next(data.prefetch_to_device(experiment.train_batches(0)))
    state, metrics = step(state, batch, experiment.keys.step)
    floats = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert {x.dtype for x in floats} == {jnp.dtype(jnp.float32)}, dtype
    results[dtype] = {k: float(v[0]) for k, v in jax.device_get(metrics).items()}
  losses = [k for k in results["float32"] if k.endswith("loss") or k in ("elbo", "kl")]
  assert losses
  for name in losses:
    np.testing.assert_allclose(results["bfloat16"][name], results["float32"][name], rtol=0.02)
