"""The trainer's overhead: each default config's steps/s as `main.py` logs it
against the same compiled step on one fixed batch, side by side.

  python benchmarks/trainer.py                          # every default config
  python benchmarks/trainer.py --configs=vae,cnn --rounds=3

Per config, in its own process, alternating rounds of
- the trainer: `train.train_and_evaluate` on the default config (its data
  pipeline, prefetch, logging, checkpoint schedule), evaluations and sample
  grids switched off (they are left out of its steps/s anyway); its rate is the
  logged `steps_per_sec` over every logged interval after the first;
- the fixed batch: the trainer's own compiled call (guarded, donated,
  `train.steps_per_dispatch` steps per call) on one batch already on the devices.
The ratio trainer / fixed is what the trainer loses to its host work.
Prints a markdown table for BENCHMARKS.md.
"""

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks import timing  # noqa: E402
from configs import common  # noqa: E402
from imgen.core import runtime  # noqa: E402
from imgen.core import writers  # noqa: E402
from imgen.evaluation.experiment import Experiment  # noqa: E402
from imgen.modes import train  # noqa: E402

flags.DEFINE_list(
  "configs",
  ["gan", "vae", "cnn", "segment", "texture", "diffusion", "text_to_image", "speech_to_image"],
  "Config files (configs/<name>.py) to measure.",
)
flags.DEFINE_float("seconds", 20.0, "About how long each timed run lasts.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds of (trainer, fixed batch).")
flags.DEFINE_bool("smoke", False, "The configs' smoke variants: seconds, for the tests.")
flags.DEFINE_string("worker", None, "Internal: the config this process measures.")
FLAGS = flags.FLAGS


def _quiet_trainer() -> None:
  """Evaluations and sample grids off: the trainer leaves them out of its rate."""
  train._Run.evaluate = lambda self, step: None
  train._Run.write_images = lambda self, step: None


def _fixed_batch_rate(experiment: Experiment, calls: int) -> float:
  """Steps/s of the trainer's compiled call on one batch kept on the devices."""
  k = experiment.config.train.steps_per_dispatch
  call, state, batch = timing.trainer_call(experiment, k)
  state, metrics = call(state, batch, experiment.keys.step)  # Compiled (or read from the cache).
  jax.block_until_ready(metrics)
  t = time.perf_counter()
  for _ in range(calls):
    state, metrics = call(state, batch, experiment.keys.step)
  jax.block_until_ready((state, metrics))
  return calls * k / (time.perf_counter() - t)


def _trainer_rate(config, steps: int, log_every: int) -> float:
  """Steps/s the trainer logs, over the logged intervals after the first."""
  config = config.copy_and_resolve_references()
  config.train.update(num_steps=steps, log_every=log_every, checkpoint_every=steps)
  with tempfile.TemporaryDirectory() as workdir:
    train.train_and_evaluate(config, workdir)
    rates = writers.read_scalars(workdir)["steps_per_sec"]
  later = [rate for step, rate in sorted(rates.items())][1:]
  return len(later) / sum(1 / r for r in later)  # Equal intervals: the harmonic mean.


def measure(name: str) -> dict:
  config = common.default_config(name, "smoke" if FLAGS.smoke else None)
  config.eval.metrics = ""
  _quiet_trainer()
  experiment = Experiment.create(config)
  k = config.train.steps_per_dispatch
  probe = _fixed_batch_rate(experiment, 2)  # Compiles; a first rate to size the runs.
  log_every = max(k, round(probe * FLAGS.seconds / 8 / k) * k)  # ~8 logged intervals per run.
  steps = 9 * log_every
  trainer, fixed = [], []
  for _ in range(FLAGS.rounds):
    trainer.append(_trainer_rate(config, steps, log_every))
    fixed.append(_fixed_batch_rate(experiment, steps // k))
  return {
    "config": name,
    "batch": config.train.batch_size,
    "steps_per_call": k,
    "log_every": log_every,
    "trainer": trainer,
    "fixed": fixed,
    "ratio": statistics.median(trainer) / statistics.median(fixed),
  }


def _row(r: dict) -> str:
  t, f = statistics.median(r["trainer"]), statistics.median(r["fixed"])
  rounds = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(r["trainer"], r["fixed"], strict=True))
  return (
    f"| {datetime.date.today()} | configs/{r['config']}.py | {r['batch']} | {r['steps_per_call']} "
    f"| {t:.2f} | {f:.2f} | **{r['ratio']:.3f}** | {rounds} |"
  )


def main(argv):
  del argv
  if FLAGS.worker:
    runtime.configure_xla()
    print("RESULT " + json.dumps(measure(FLAGS.worker)), flush=True)
    return
  machine = platform.processor() or platform.machine()
  print(f"{machine}, {os.cpu_count()} cores, jax {jax.__version__}")
  print(
    "| date | config | batch | steps per call | trainer steps/s | fixed-batch steps/s "
    "| trainer / fixed | rounds (trainer/fixed) |"
  )
  print("|---|---|---|---|---|---|---|---|")
  env = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", **os.environ}
  if "JAX_COMPILATION_CACHE_DIR" not in env:  # The trainer's compile, read by the fixed batch.
    env["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="imgen-bench-cache-")
  for name in FLAGS.configs:
    if not os.path.isfile(os.path.join(ROOT, "configs", f"{name}.py")):
      raise app.UsageError(f"--configs: there is no configs/{name}.py")
    cmd = [sys.executable, __file__, f"--worker={name}", f"--seconds={FLAGS.seconds}"]
    cmd += [f"--rounds={FLAGS.rounds}", f"--smoke={FLAGS.smoke}"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
      sys.exit(f"configs/{name}.py failed:\n{done.stderr[-3000:]}")
    print(_row(json.loads(lines[0][len("RESULT ") :])), flush=True)


if __name__ == "__main__":
  app.run(main)
