"""Throughput of the judge's train step (configs/judge.py) side by side with its PyTorch peer.

  python benchmarks/judge_step.py --rounds=3 --steps=50

imgen's step is timed as the trainer runs it: behind the non-finite guard,
buffers donated, `train.steps_per_dispatch` steps per call, on one fixed batch
of random images and layouts (with the config's elastic distortion of half
the rows, which the peer lacks: `--elastic=0` times the network alone); the
peer (benchmarks/torch_reader.py, the same network and loss, parameter counts
checked equal first) in PyTorch eager. The
two alternate `rounds` times in one process; the ratio of their medians is
printed with a markdown row for BENCHMARKS.md.
"""

import os
import statistics
import sys

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import peer_counts  # noqa: E402
from benchmarks import timing  # noqa: E402
from benchmarks import torch_reader  # noqa: E402
from configs import judge as judge_config  # noqa: E402
from imgen.core import runtime  # noqa: E402
from imgen.data.spec import DataSpec  # noqa: E402
from imgen.data.spec import Field  # noqa: E402
from imgen.families.judge import JudgeFamily  # noqa: E402

flags.DEFINE_integer("steps", 50, "Timed train steps per round (rounded up to whole calls).")
flags.DEFINE_integer("rounds", 3, "Alternating imgen/PyTorch rounds.")
flags.DEFINE_float("elastic", None, "judge.elastic (default: the config's; the peer has none).")
FLAGS = flags.FLAGS


def layout_batch(n: int, b: int, size: int, backgrounds: int) -> dict[str, np.ndarray]:
  """Random images and layouts of one or two digits in distinct cells, per device."""
  rng = np.random.default_rng(0)
  cells = np.stack([rng.permutation(9)[:2] for _ in range(n * b)]).reshape(n, b, 2)
  cells[..., 1] = np.where(rng.random((n, b)) < 0.5, -1, cells[..., 1])
  draw = lambda high, shape=(2,): rng.integers(0, high, (n, b, *shape)).astype(np.int32)
  return dict(
    images=rng.uniform(-1, 1, (n, b, size, size, 3)).astype(np.float32),
    cells=cells.astype(np.int32),
    digits=draw(10),
    colour_names=draw(9),
    sizes=draw(3),
    background=draw(backgrounds, ()),
  )


def main(argv):
  del argv
  runtime.configure_xla()
  config = judge_config.get_config()
  if FLAGS.elastic is not None:
    config.judge.elastic = FLAGS.elastic
  size, batch = config.model.image_size, config.train.batch_size
  fields = {"image": Field("image", "image", (size, size, 3), "uint8")}
  for name in ("digits", "cells", "colour_names", "sizes"):
    fields[name] = Field("tensor", name, (2,), "int32")
  fields["background"] = Field("label", "background", (), "int32")
  fields["mask"] = Field("mask", "mask", (size, size), "uint8")
  spec = DataSpec(size, fields)
  family = JudgeFamily(config, spec)
  shape = peer_counts.reader_shape(family.model)
  torch = timing.import_torch("judge's layout reader")
  count = peer_counts.check_family(torch, config, spec)
  print(f"imgen and its PyTorch peer: {count:,} parameters each")
  n, per_call = jax.local_device_count(), config.train.steps_per_dispatch
  layout = layout_batch(n, batch // n, size, shape["backgrounds"])
  images = layout.pop("images")
  layout["mask"] = (images[..., 0] > 0.8).astype(np.int32)  # Some "ink" for the distortion.
  run_jax, compile_s = timing.trainer_step_runner(family, images, per_call, **layout)
  print(f"JAX {jax.__version__}; {per_call} steps per call; compile {compile_s:.1f}s")
  jax_rates, torch_rates = [], []
  for r in range(FLAGS.rounds):
    jax_rates.append(run_jax(FLAGS.steps))
    torch_rates.append(torch_reader.steps_per_second(batch, size, steps=FLAGS.steps, **shape))
    print(f"round {r}: imgen {jax_rates[-1]:.2f}, PyTorch eager {torch_rates[-1]:.2f} steps/s")
  ours, theirs = statistics.median(jax_rates), statistics.median(torch_rates)
  print("| network (batch) | imgen steps/s (rounds) | PyTorch steps/s (rounds) | imgen/PyTorch |")
  fmt = lambda rates: ", ".join(f"{x:.2f}" for x in rates)
  print(
    f"| judge reader {size}x{size} -> {6 * 2**config.model.levels}, width "
    f"{config.model.width}, elastic {config.judge.elastic} ({batch}) | {fmt(jax_rates)} | "
    f"{fmt(torch_rates)} | **{ours / theirs:.2f}** |"
  )


if __name__ == "__main__":
  app.run(main)
