"""Weak scaling on fake CPU devices: the same global batch on 1, 2 and 4
devices (and 8 steps per device call) must compute the same run.

  python benchmarks/scaling.py                          # gan, vae, cnn at 28x28
  python benchmarks/scaling.py --families=gan --steps=48

Each row runs in its own process with JAX_NUM_CPU_DEVICES set, trains the
family's default config (global batch 64, real embedded digits) for `steps`
steps, then draws one sampling batch through the pmap'd sampler. The parent
compares every row's final parameters, BatchNorm statistics and samples with
the 1-device, 1-step-per-call row. Rates are after compile, over the last
`timed` steps. Fake devices share this machine's cores, so the rates show the
overhead of splitting the batch, not a speed-up; on a multi-accelerator host
the same command measures real weak scaling.

Differences are the largest |difference| of a value relative to its size (for
a state leaf, its largest |value|). The first step's losses and gradient norms
show the computation is the same up to rounding; parameters drift further
because Adam's first updates are ~lr * sign(g): a gradient element at rounding
level that flips sign moves by 2 lr, and the GAN's dynamics amplify that.
"""

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import common  # noqa: E402
from imgen import data  # noqa: E402
from imgen import families  # noqa: E402
from imgen.core import guards  # noqa: E402
from imgen.core import parallel  # noqa: E402
from imgen.core import runtime  # noqa: E402
from imgen.evaluation import evaluate  # noqa: E402
from imgen.evaluation.experiment import Experiment  # noqa: E402
from imgen.modes import train  # noqa: E402

flags.DEFINE_list("families", list(families.FAMILIES), "Families to measure.")
flags.DEFINE_integer("size", 28, "Resolution.")
flags.DEFINE_integer("steps", 32, "Train steps per run (a multiple of 8).")
flags.DEFINE_integer("timed", 16, "Final steps timed (a multiple of 8).")
flags.DEFINE_string("worker", None, "Internal: 'family:devices:steps_per_call:out.npz'.")
FLAGS = flags.FLAGS

RUNS = ((1, 1), (2, 1), (4, 1), (1, 8))  # (devices, steps per device call)
EARLY = 8  # The state is also compared after this many steps.


def _config(family: str):
  config = common.default_config(family)
  config.model.image_size = FLAGS.size
  config.eval.metrics = ""
  return config


def _leaves(replicated, prefix: str) -> dict[str, np.ndarray]:
  host = jax.device_get(parallel.unreplicate(replicated))
  leaves = jax.tree_util.tree_leaves_with_path(host)
  return {f"{prefix}{jax.tree_util.keystr(p)}": np.asarray(x) for p, x in leaves}


def measure(family: str, per_call: int, out_path: str) -> dict:
  config = _config(family)
  experiment = Experiment.create(config)
  step = guards.guard_nonfinite(experiment.family.make_train_step())
  call = parallel.pmap_step(train.scan_steps(step) if per_call > 1 else step, donate=True)
  num_calls = FLAGS.steps // per_call
  sizes = iter([per_call] * num_calls)
  batches = data.prefetch_to_device(train.stack_steps(experiment.train_batches(0), sizes))
  state = parallel.replicate(experiment.family.init_state(experiment.keys.init))
  t = time.perf_counter()
  state, metrics = call(state, next(batches), experiment.keys.step)
  jax.block_until_ready(metrics)
  out = {"first_call_s": time.perf_counter() - t}
  first = jax.device_get(metrics)  # Leaves (devices,) or (devices, steps per call).
  arrays = {f"metrics.{k}": np.asarray(v).reshape(-1)[0] for k, v in first.items()}
  for i in range(1, num_calls):
    if i * per_call == EARLY:
      arrays.update(_leaves(state, "early"))
    if i == num_calls - FLAGS.timed // per_call:
      jax.block_until_ready(state)
      t = time.perf_counter()
    state, metrics = call(state, next(batches), experiment.keys.step)
  jax.block_until_ready(state)
  out["steps_per_s"] = FLAGS.timed / (time.perf_counter() - t)
  out["images_per_s"] = out["steps_per_s"] * config.train.batch_size

  arrays.update(_leaves(state, "final"))
  if isinstance(experiment.family, families.Generates):
    sample_batches = evaluate.make_sampler(experiment.family, family, config.eval.batch_size)
    key = experiment.keys.quality_samples
    (samples,) = sample_batches(state, key, config.eval.batch_size)
    arrays["samples"] = np.asarray(samples).reshape(-1, *np.asarray(samples).shape[2:])
  np.savez(out_path, **arrays)
  return out


def _compare(reference: str, other: str) -> dict[str, float]:
  """Max |diff| relative to each value's scale: the first step's metrics (losses,
  gradient norms), the state after EARLY steps and at the end; max |diff| of samples."""
  a, b = np.load(reference), np.load(other)
  out = {"metrics": 0.0, "early": 0.0, "final": 0.0, "samples": float("nan")}
  for name in a.files:
    diff = float(np.max(np.abs(a[name].astype(np.float64) - b[name]), initial=0.0))
    if name == "samples":
      out["samples"] = diff
    elif name.startswith("metrics.") and name != "metrics.nonfinite":
      out["metrics"] = max(out["metrics"], diff / max(abs(float(a[name])), 1e-12))
    elif a[name].dtype.kind == "f" and not name.startswith("metrics."):
      scale = max(float(np.max(np.abs(a[name]), initial=0.0)), 1e-12)
      when = name.split(".", 1)[0]
      out[when] = max(out[when], diff / scale)
  return out


def _format(x: float) -> str:
  return "-" if np.isnan(x) else f"{x:.1e}"


def main(argv):
  runtime.configure_xla()
  del argv
  if FLAGS.worker:
    family, _, per_call, out_path = FLAGS.worker.split(":")
    print("RESULT " + json.dumps(measure(family, int(per_call), out_path)))
    return
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for family in FLAGS.families:
      reference = None
      for devices, per_call in RUNS:
        out_path = os.path.join(tmp, f"{family}-{devices}-{per_call}.npz")
        env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(devices), "JAX_PLATFORMS": "cpu"}
        cmd = [sys.executable, os.path.abspath(__file__)]
        cmd += [f"--worker={family}:{devices}:{per_call}:{out_path}", f"--steps={FLAGS.steps}"]
        cmd += [f"--timed={FLAGS.timed}", f"--size={FLAGS.size}"]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if not results:
          print(f"{family} {devices}x{per_call}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
          continue
        r = json.loads(results[0][len("RESULT ") :])
        reference = reference or out_path
        diff = _compare(reference, out_path)
        rows.append(
          f"| {family} | {devices} | {per_call} | {r['steps_per_s']:.2f} | "
          f"{r['images_per_s']:,.0f} | {r['first_call_s']:.1f} | {diff['metrics']:.1e} | "
          f"{diff['early']:.1e} | "
          f"{diff['final']:.1e} | {_format(diff['samples'])} |"
        )
        print(rows[-1], flush=True)
  print(
    f"\n{datetime.date.today()}, {platform.processor() or platform.machine()}, "
    f"{os.cpu_count()} CPUs, JAX {jax.__version__}; {FLAGS.size}x{FLAGS.size}, global batch 64, "
    f"{FLAGS.steps} steps, the last {FLAGS.timed} timed\n"
  )
  print(
    "| family | devices | steps per call | steps/s | images/s | first call s | "
    "vs the first row: step 1 losses and gradient norms | state after "
    f"{EARLY} steps | state at the end | samples at the end |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
  )
  print("\n".join(rows))


if __name__ == "__main__":
  app.run(main)
