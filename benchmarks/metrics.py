"""Throughput of the sample-quality layer: feature extraction and the metrics.

  python benchmarks/metrics.py                      # all, sizes as below
  python benchmarks/metrics.py --cnn_workdir=runs/cnn

Feature networks (images/s after compile, on all local devices, pmap'd as in
training): the in-domain CNN at 28x28 (a trained one from --cnn_workdir, or a
freshly initialised one: same cost) and the FID Inception-v3 at 299x299 on
random weights (same cost as the real ones). Metrics (seconds per call, after
compile) on random features of the sizes FID is usually quoted at.
Prints markdown rows for BENCHMARKS.md.
"""

import os
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from imgen.core import parallel  # noqa: E402
from imgen.core import runtime  # noqa: E402
from imgen.methods import metrics  # noqa: E402
from imgen.models import inception  # noqa: E402
from imgen.models.classifiers import SimpleCNN  # noqa: E402

flags.DEFINE_integer("cnn_batch", 200, "Global batch of the CNN.")
flags.DEFINE_integer("inception_batch", 32, "Global batch of Inception-v3.")
flags.DEFINE_integer("batches", 5, "Timed batches per network.")
flags.DEFINE_string("only", "", "'features' or 'metrics' to run one half.")
FLAGS = flags.FLAGS


def _time(fn, repeats: int) -> float:
  """Seconds per call after a first (compiling) call."""
  jax.block_until_ready(fn())
  t = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn())
  return (time.perf_counter() - t) / repeats


def _features_rate(apply, variables, shape, batch: int) -> tuple[float, float]:
  """(images/s, compile s) of `apply(variables, images)` pmap'd over the devices."""
  n = jax.local_device_count()
  pmapped = jax.pmap(apply, axis_name=parallel.AXIS)
  replicated = parallel.replicate(variables)
  images = np.random.default_rng(0).uniform(-1, 1, (n, batch // n, *shape)).astype(np.float32)
  images = jax.device_put(images, parallel.device_sharding())
  t = time.perf_counter()
  jax.block_until_ready(pmapped(replicated, images))
  compile_s = time.perf_counter() - t
  seconds = _time(lambda: pmapped(replicated, images), FLAGS.batches)
  return batch / seconds, compile_s


def bench_features() -> list[str]:
  rows = []
  cnn = SimpleCNN(width=32, dropout=0.3)
  variables = cnn.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  rate, compile_s = _features_rate(
    lambda v, x: cnn.apply(v, x, features=True), variables, (28, 28, 1), FLAGS.cnn_batch
  )
  rows.append(
    f"| CNN (simple, width 32) 28x28x1 -> 128 | {FLAGS.cnn_batch} | {rate:.0f} | {compile_s:.1f} |"
  )
  net = inception.InceptionV3()
  shapes = inception.variable_shapes()
  variables = jax.tree.map(lambda s: np.full(s.shape, 0.01, np.float32), shapes)

  def apply(v, x):
    return net.apply(v, inception.preprocess(x))

  rate, compile_s = _features_rate(apply, variables, (28, 28, 1), FLAGS.inception_batch)
  rows.append(
    f"| Inception-v3 (FID) 28x28x1 -> 299x299x3 -> 2048 | {FLAGS.inception_batch} | "
    f"{rate:.1f} | {compile_s:.1f} |"
  )
  return rows


def _metric_calls(real, fake, logits, key) -> dict:
  return {
    "FID (statistics of both + Fréchet)": lambda: metrics.fid_from_features(real, fake),
    "KID (100 subsets of 1,000)": lambda: metrics.kernel_inception_distance(
      real, fake, key, 100, 1000
    ),
    "IS (10 splits)": lambda: metrics.inception_score(logits, 10),
    "precision/recall (k=3)": lambda: metrics.precision_recall(real, fake, 3),
  }


def bench_metrics() -> list[str]:
  rows = []
  rng = np.random.default_rng(0)
  for n, d in ((1000, 128), (10000, 2048)):
    real = rng.normal(size=(n, d)).astype(np.float32)
    fake = rng.normal(size=(n, d)).astype(np.float32) + 0.1
    logits = rng.normal(size=(n, 1008 if d == 2048 else 10)).astype(np.float32)
    for name, fn in _metric_calls(real, fake, logits, jax.random.key(0)).items():
      seconds = _time(fn, 1)
      rows.append(f"| {name} | {n:,} x {d} | {seconds:.2f} | {n / seconds:,.0f} |")
  return rows


def main(argv):
  runtime.configure_xla()
  del argv
  print(f"devices: {jax.devices()}")
  if FLAGS.only in ("", "features"):
    print("| network | batch | images/s | compile s |\n|---|---|---|---|")
    print("\n".join(bench_features()))
  if FLAGS.only in ("", "metrics"):
    print("| metric | real = generated set, features | seconds | samples/s |\n|---|---|---|---|")
    print("\n".join(bench_metrics()))


if __name__ == "__main__":
  app.run(main)
