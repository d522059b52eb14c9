"""One command for the throughput of every family: train step, compile, memory,
input pipeline, sampling.

  python benchmarks/suite.py                               # every family at 28 and 64
  python benchmarks/suite.py --families=gan --sizes=64 --steps=10

Each (family, resolution) runs in its own process on the family's default
config (embedded MNIST digits padded to the resolution; segmentation: its
64x64 scenes, resized below 64), so its peak host
memory is its own. A worker measures, after compile:
- the train step, images/s (steps of the config's global batch, device-synced);
- the first step's wall time (compile included);
- the input pipeline alone, images/s (the same batches, without the step), at
  the default thread count (one per core, up to 16) and at each of
  `--pipeline_threads` the host has cores for;
- sampling (families that generate: the pmap'd sampler of the sample-quality metrics), images/s;
- metric features of those samples (the in-domain CNN, pmap'd), images/s
  (`benchmarks/metrics.py` has Inception-v3 and the metrics themselves);
- peak resident host memory.
Prints a markdown table for BENCHMARKS.md.
"""

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import common  # noqa: E402
from imgen import data  # noqa: E402
from imgen import families  # noqa: E402
from imgen.core import guards  # noqa: E402
from imgen.core import parallel  # noqa: E402
from imgen.core import runtime  # noqa: E402
from imgen.evaluation import evaluate  # noqa: E402
from imgen.evaluation.experiment import Experiment  # noqa: E402
from imgen.models import classifiers  # noqa: E402

flags.DEFINE_list("families", list(families.FAMILIES), "Families to measure.")
flags.DEFINE_list("sizes", ["28", "64"], "Resolutions.")
flags.DEFINE_integer("steps", 20, "Timed train steps (after the compiling one).")
flags.DEFINE_integer("pipeline_batches", 200, "Timed batches of the input pipeline alone.")
flags.DEFINE_list("pipeline_threads", ["2", "16"], "Input thread counts also timed (<= cores).")
flags.DEFINE_string("worker", None, "Internal: 'family:size' to measure in this process.")
FLAGS = flags.FLAGS


def _config(family: str, size: int):
  config = common.default_config(family)
  config.model.image_size = size
  config.eval.metrics = ""
  if size < 64 and config.data.name != "embedded_mnist":  # The 64x64 scenes: crop and resize.
    config.data.resize = "resize"
  return config


def _feature_rate(samples: list[jax.Array], spec) -> float:
  """images/s of the in-domain CNN's features (default width, fresh weights: the
  rate does not depend on them) on device batches of samples, pmap'd."""
  network = classifiers.SimpleCNN()
  variables = jax.jit(network.init)(jax.random.key(0), jnp.zeros((1, *spec.image.shape)))
  extract = jax.pmap(lambda v, x: network.apply(v, x, features=True)[0], in_axes=(None, 0))
  jax.block_until_ready(extract(variables, samples[0]))
  t = time.perf_counter()
  jax.block_until_ready([extract(variables, batch) for batch in samples])
  return sum(batch.shape[0] * batch.shape[1] for batch in samples) / (time.perf_counter() - t)


def measure(family: str, size: int) -> dict:
  config = _config(family, size)
  experiment = Experiment.create(config)
  batch = config.train.batch_size
  out = {"family": family, "size": size, "batch": batch, "devices": jax.device_count()}

  default_threads = data.pipeline.input_threads(None)
  counts = {int(n) for n in FLAGS.pipeline_threads if int(n) <= (os.cpu_count() or 1)}
  out["pipeline_by_threads"] = {}
  for threads in sorted(counts | {default_threads}):
    config.data.num_threads = threads
    t = time.perf_counter()
    batches = experiment.train_batches(0)
    for _ in range(FLAGS.pipeline_batches):
      next(batches)
    rate = FLAGS.pipeline_batches * batch / (time.perf_counter() - t)
    out["pipeline_by_threads"][str(threads)] = rate
  config.data.num_threads = None
  out["pipeline_images_per_s"] = out["pipeline_by_threads"][str(default_threads)]

  train_step = parallel.pmap_step(
    guards.guard_nonfinite(experiment.family.make_train_step()), donate=True
  )
  state = parallel.replicate(experiment.family.init_state(experiment.keys.init))
  device_batches = data.prefetch_to_device(experiment.train_batches(0))
  t = time.perf_counter()
  state, metrics = train_step(state, next(device_batches), experiment.keys.step)
  jax.block_until_ready(metrics)
  out["first_step_s"] = time.perf_counter() - t
  t = time.perf_counter()
  for _ in range(FLAGS.steps):
    state, metrics = train_step(state, next(device_batches), experiment.keys.step)
  jax.block_until_ready((state, metrics))
  seconds = (time.perf_counter() - t) / FLAGS.steps
  out["train_steps_per_s"] = 1 / seconds
  out["train_images_per_s"] = batch / seconds

  if isinstance(experiment.family, families.Generates):
    sample_batches = evaluate.make_sampler(experiment.family, family, config.eval.batch_size)
    n = config.eval.batch_size
    jax.block_until_ready(list(sample_batches(state, experiment.keys.quality_samples, n)))
    t = time.perf_counter()
    samples = list(sample_batches(state, experiment.keys.quality_samples, 5 * n))
    jax.block_until_ready(samples)
    out["sample_images_per_s"] = 5 * n / (time.perf_counter() - t)
    out["feature_images_per_s"] = _feature_rate(samples, experiment.spec)
  out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return out


def _row(r: dict) -> str:
  sample = f"{r['sample_images_per_s']:,.0f}" if "sample_images_per_s" in r else "-"
  features = f"{r['feature_images_per_s']:,.0f}" if "feature_images_per_s" in r else "-"
  ratio = r["pipeline_images_per_s"] / r["train_images_per_s"]
  by_threads = ", ".join(f"{n}: {v:,.0f}" for n, v in r["pipeline_by_threads"].items())
  return (
    f"| {r['family']} | {r['size']}x{r['size']} | {r['batch']} | {r['train_steps_per_s']:.2f} | "
    f"{r['train_images_per_s']:,.0f} | {r['first_step_s']:.1f} | "
    f"{r['pipeline_images_per_s']:,.0f} ({ratio:.0f}x) | {by_threads} | {sample} | {features} | "
    f"{r['peak_rss_mb']:,.0f} |"
  )


def main(argv):
  runtime.configure_xla()
  del argv
  if FLAGS.worker:
    family, size = FLAGS.worker.split(":")
    print("RESULT " + json.dumps(measure(family, int(size))))
    return
  rows = []
  for family in FLAGS.families:
    for size in FLAGS.sizes:
      cmd = [sys.executable, os.path.abspath(__file__), f"--worker={family}:{size}"]
      cmd += [f"--steps={FLAGS.steps}", f"--pipeline_batches={FLAGS.pipeline_batches}"]
      cmd += [f"--pipeline_threads={','.join(FLAGS.pipeline_threads)}"]
      done = subprocess.run(cmd, capture_output=True, text=True, check=False)
      results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
      if not results:
        print(f"{family} {size}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
        continue
      rows.append(_row(json.loads(results[0][len("RESULT ") :])))
      print(rows[-1], flush=True)
  print(
    f"\n{datetime.date.today()}, {platform.processor() or platform.machine()}, "
    f"{os.cpu_count()} CPUs, JAX {jax.__version__}, {jax.devices()[0].platform}\n"
  )
  print(
    "| family | resolution | batch | steps/s | train images/s | first step s (compile) | "
    "pipeline images/s (x the step's need) | pipeline images/s by input threads | "
    "sampling images/s | CNN feature images/s | peak RSS MB |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
  )
  print("\n".join(rows))


if __name__ == "__main__":
  app.run(main)
