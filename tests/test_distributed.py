"""Several processes forming one run: start-up, the input layout, and a 2-process
run on localhost (JAX's CPU collectives, gloo) against 1 process of 4 devices."""

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time

from helpers import ROOT
from helpers import assert_trees_close
from helpers import assert_trees_equal
from helpers import main_command
from helpers import override
from helpers import saved_state
from helpers import smoke_config
import jax
import numpy as np
from PIL import Image
import pytest

from imgen import data
from imgen.core import distributed
from imgen.core import launch
from imgen.core.errors import ConfigError
from imgen.core.writers import read_scalars
from imgen.evaluation.experiment import Experiment
from imgen.modes import train


def test_a_run_is_single_process_unless_flags_the_environment_or_a_cluster_say_otherwise():
  assert distributed.resolve("auto", environ={}) is None
  assert distributed.resolve("off", "h:1", 2, 0, environ={}) is None
  explicit = distributed.resolve("auto", "10.0.0.1:1234", 4, 3, environ={})
  assert explicit == distributed.Setup("10.0.0.1:1234", 4, 3, "explicit")
  from_env = {
    "IMGEN_COORDINATOR_ADDRESS": "h:9",
    "IMGEN_NUM_PROCESSES": "2",
    "IMGEN_PROCESS_ID": "1",
  }
  assert distributed.resolve("auto", environ=from_env) == distributed.Setup("h:9", 2, 1)
  assert distributed.resolve("auto", process_id=0, environ=from_env).process_id == 0  # Flag wins.
  assert distributed.resolve("auto", "h:9", 1, 0, environ={}) is None  # One process: no service.
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2"}
  assert distributed.resolve("auto", environ=slurm) == distributed.Setup(source="SLURM")
  assert distributed.resolve("auto", environ={**slurm, "SLURM_NTASKS": "1"}) is None
  ompi = {"OMPI_MCA_orte_hnp_uri": "1.0;tcp://h:1", "OMPI_COMM_WORLD_SIZE": "8"}
  assert distributed.resolve("auto", environ=ompi).source == "Open MPI"
  assert distributed.resolve("auto", environ={"TPU_WORKER_HOSTNAMES": "a,b"}).source == "Cloud TPU"
  assert distributed.resolve("auto", environ={"TPU_WORKER_HOSTNAMES": "a"}) is None
  assert distributed.resolve("on", environ={}).source == "--distributed=on"
  for args, message in [
    (("auto", "h:1", None, None), "missing --num_processes .* --process_id"),
    (("auto", None, 2, None), "missing --coordinator_address"),
    (("auto", "h:1", 2, 2), "process_id=2 with num_processes=2"),
    (("sometimes",), "--distributed='sometimes'"),
  ]:
    with pytest.raises(ConfigError, match=message):
      distributed.resolve(*args, environ={})
  with pytest.raises(ConfigError, match="num_processes='two'"):
    distributed.resolve("auto", environ={**from_env, "IMGEN_NUM_PROCESSES": "two"})


@pytest.mark.parametrize("processes", [2, 4])
def test_the_processes_chunks_make_the_global_batches_in_order(data_dir, monkeypatch, processes):
  """Process p's batches are the p-th chunks of the one-process batches, train and eval."""
  config = smoke_config("gan", data_dir, batch_size=8)
  config.eval.batch_size = 12  # Its last batch is padded: 1000 = 83 * 12 + 4.
  experiment = Experiment.create(config)

  def batches(index, count, which):
    monkeypatch.setattr(jax, "process_index", lambda: index)
    monkeypatch.setattr(jax, "process_count", lambda: count)
    if which == "train":
      it = experiment.train_batches(start_step=5)
      return [next(it) for _ in range(3)]
    return list(experiment.eval_batches())

  for which in ("train", "eval"):
    whole = batches(0, 1, which)
    parts = [batches(p, processes, which) for p in range(processes)]
    assert len(whole) == len(parts[0]) and len(whole) > 1
    for i, batch in enumerate(whole):
      for key, value in batch.items():
        joined = np.concatenate([p[i][key].reshape(-1, *value.shape[2:]) for p in parts])
        np.testing.assert_array_equal(joined, value.reshape(-1, *value.shape[2:]), err_msg=key)


def test_launch_gives_each_process_its_place_and_refuses_bad_arguments(capsys):
  env = launch.process_env(1, 2, 4321, 2, base={"PATH": "/bin"})
  assert env["IMGEN_COORDINATOR_ADDRESS"] == "127.0.0.1:4321"
  assert (env["IMGEN_NUM_PROCESSES"], env["IMGEN_PROCESS_ID"]) == ("2", "1")
  assert (env["JAX_NUM_CPU_DEVICES"], env["JAX_PLATFORMS"]) == ("2", "cpu")
  assert "JAX_PLATFORMS" not in launch.process_env(0, 2, 1, None, base={})
  for argv, message in [
    (["--processes=0", "--", "--config=configs/gan.py"], "--processes=0"),
    (["--processes=2"], "give main.py's flags after --"),
  ]:
    with pytest.raises(SystemExit):
      launch.main(argv)
    assert message in capsys.readouterr().err


def test_launch_stops_the_others_when_one_process_is_killed(tmp_path, monkeypatch, capsys):
  """Process 0 kills itself with SIGKILL; process 1 would wait forever (as for a
  collective): the launcher names the killed one, stops the other, and exits 137."""
  script = tmp_path / "child.py"
  script.write_text(
    "import os, signal, time\n"
    "if os.environ['IMGEN_PROCESS_ID'] == '0':\n"
    "  time.sleep(0.5)\n"
    "  os.kill(os.getpid(), signal.SIGKILL)\n"
    "print('waiting', flush=True)\n"
    "time.sleep(600)\n"
  )
  monkeypatch.setattr(launch, "MAIN", str(script))
  start = time.monotonic()
  code = launch.main(["--processes=2", "--", "--config=configs/gan.py", f"--workdir={tmp_path}"])
  assert code == 128 + signal.SIGKILL
  assert time.monotonic() - start < launch.GRACE_S / 2  # SIGTERM ended it, not the grace SIGKILL.
  err = capsys.readouterr().err
  assert "launch: process 0" in err and "was killed by SIGKILL" in err, err


# Long enough to be stopped in the middle: its SIGTERM comes after step 20, 40 steps before
# the end (~2 s at the 16-22 steps/s it trains at alone; longer as the suite loads the
# machine, which also slows the signal's way). Checkpoints every 20, logs every 10.
STEPS = 60
TRAIN = dict(num_steps=STEPS, checkpoint_every=20, log_every=10)
FLAGS = [
  *(f"--config.train.{k}={v}" for k, v in TRAIN.items()),
  "--config.eval.every_steps=1000",
  "--config.eval.sample_every=1000",
]


class Launched:
  """`python -m imgen.core.launch` of 2 processes of 2 CPU devices on the GAN smoke
  config: its log is read line by line (by a thread, so a silent process cannot
  block the test past its timeout); its processes die with the test."""

  def __init__(self, workdir, data_dir, *overrides):
    args = main_command("gan", workdir, data_dir, *FLAGS, *overrides)[2:]
    env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}
    self.process = subprocess.Popen(
      [sys.executable, "-m", "imgen.core.launch", "--processes=2", "--cpu_devices=2", "--", *args],
      cwd=ROOT,
      env=env,
      stderr=subprocess.PIPE,
      stdout=subprocess.DEVNULL,
      text=True,
    )
    self.lines, self.pids, self._queue = [], [], queue.Queue()
    threading.Thread(target=self._read, daemon=True).start()

  def _read(self) -> None:
    for line in self.process.stderr:
      self._queue.put(line)
    self._queue.put(None)

  def read_until(self, marker: str | None, silence: float = 300) -> str:
    """Reads the log up to and including the first line with `marker` (None: to
    the end); fails the test only if the run logs nothing for `silence` seconds,
    so a busy machine slows the test down but does not fail it."""
    while True:
      try:
        line = self._queue.get(timeout=silence)
      except queue.Empty:
        pytest.fail(
          f"No {marker!r}, and nothing logged for {silence} s; the log ends:\n"
          + "".join(self.lines[-30:])
        )
      if line is None:
        return ""
      self.lines.append(line)
      if line.startswith("launch: process ") and " is pid " in line:
        self.pids.append(int(line.split(" is pid ")[1]))
      if marker is not None and marker in line:
        return line

  def finish(self) -> str:
    self.read_until(None)
    self.process.wait(timeout=300)  # Its output has ended: the processes are exiting.
    return "".join(self.lines)

  def kill(self) -> None:
    for pid in self.pids:
      with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    self.process.kill()
    self.process.wait()


@pytest.fixture
def launched():
  runs = []

  def start(*args):
    runs.append(Launched(*args))
    return runs[-1]

  yield start
  for run in runs:  # On failure too: no process outlives its test.
    run.kill()


def _png(workdir: str, name: str) -> np.ndarray:
  return np.asarray(Image.open(os.path.join(workdir, "samples", name)), np.int32)


def test_two_processes_train_as_one_of_four_devices_stop_together_and_resume_exactly(
  data_dir, cnn_workdir, tmp_path, launched
):
  config = smoke_config("gan", data_dir, **TRAIN)
  data.get_builder(config.data.name, data_dir)  # Prepared: the runs only read it.
  # Both runs evaluate (FID and KID of samples gathered from every device and
  # process) and draw a sample grid at step 20; the two processes go on to 60.
  compared = [
    "--config.train.log_every=1",
    "--config.eval.metrics=fid,kid",
    f"--config.eval.cnn_workdir={cnn_workdir}",
    f"--config.eval.stats_dir={tmp_path / 'stats'}",
  ]
  # The reference: this process's one device, in place of one process of four:
  # the global draws and synchronised statistics make them the same computation
  # (tests/replicas.py checks it step by step), and it compiles what the GAN
  # smoke run compiled.
  one = str(tmp_path / "one-process")
  for flag in (*FLAGS, *compared, "--config.train.num_steps=20"):
    override(config, flag.removeprefix("--config."))
  train.train_and_evaluate(config, one)
  straight = str(tmp_path / "two-processes")
  every_20 = ["--config.eval.every_steps=20", "--config.eval.sample_every=20"]
  run = launched(straight, data_dir, *compared, *every_20, "--config.train.keep_checkpoints=10")
  log = run.finish()
  assert run.process.returncode == 0, log[-3000:]
  assert "[0] " in log and "Process 1 of 2" not in log  # Process 1 logs warnings only.
  assert f"step {STEPS}/{STEPS}" in log and "Traceback" not in log
  scalars = {"one": read_scalars(one), "two": read_scalars(straight)}
  for name in ("d_loss", "g_loss", "d_real", "d_fake"):
    np.testing.assert_allclose(scalars["two"][name][1], scalars["one"][name][1], rtol=1e-6)
  assert len(os.listdir(os.path.join(straight, "tensorboard"))) == 1  # Process 0's only.
  # The devices see the same rows and noise; only the order of the reductions
  # differs, which a GAN's later steps amplify past any tolerance: compare at 20.
  assert_trees_close(saved_state(straight, 20)[0], saved_state(one)[0], rtol=1e-3, atol=1e-4)
  for name in ("test/fid", "test/kid"):
    np.testing.assert_allclose(scalars["two"][name][20], scalars["one"][name][20], rtol=1e-3)
  grids = [_png(run_dir, "samples_0000020.png") for run_dir in (straight, one)]
  assert np.abs(grids[0] - grids[1]).max() <= 1  # 8-bit rounding at most.

  # SIGTERM to process 1 alone: both stop after the same step, with one checkpoint of it.
  workdir = str(tmp_path / "stopped")
  run = launched(workdir, data_dir)
  run.read_until("step 20/")
  os.kill(run.pids[1], signal.SIGTERM)
  log = run.finish()
  assert run.process.returncode == 0, log[-3000:]
  stops = [
    line.split("Stopped by preemption after step ")[1].split(";")[0]
    for line in run.lines
    if "Stopped by preemption after step " in line
  ]
  assert sorted(line[:3] for line in run.lines if "Stopped by" in line) == ["[0]", "[1]"], log[
    -3000:
  ]
  assert len(set(stops)) == 1, stops
  stopped = int(stops[0])
  assert 20 <= stopped < STEPS
  saved = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")))
  assert saved == [s for s in range(20, STEPS, 20) if s < stopped][-2:] + [stopped]

  # The next launch resumes from that checkpoint, exactly. (A SIGKILL's resume is
  # tested on one process in test_faults.py, the launcher's report of it above.)
  run = launched(workdir, data_dir)
  resuming = run.read_until("Resuming")
  assert f"Resuming from the checkpoint of step {stopped}" in resuming, "".join(run.lines[-40:])
  log = run.finish()
  assert run.process.returncode == 0, log[-3000:]
  resumed, step = saved_state(workdir)
  assert step == STEPS
  assert_trees_equal(resumed, saved_state(straight)[0])
