"""Each family's train step with its layers' CPU forms against XLA's own forms.

  python benchmarks/forms.py --rounds=3                       # every default config
  python benchmarks/forms.py --families=diffusion --resize_upsampling

`model.layer_forms` (imgen/core/backend.py) picks, per backend, the form each
rewritten layer takes: 'cpu' (the forms written for XLA's CPU backend) or 'xla'
(XLA's own, what GPU and TPU run). This times each default config's train step
(as the trainer runs it: non-finite guard, buffers donated, one batch of its
data kept on the devices) in both, alternating `rounds` times in one process,
and prints the medians and their ratio. `--resize_upsampling` adds, for the
U-Net families, the upsampling they had before (`jax.image.resize(...,
"nearest")`, a gather) in place of the broadcast and reshape. Prints markdown rows.
"""

import contextlib
import os
import statistics
import sys
from unittest import mock

from absl import app
from absl import flags
import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import timing  # noqa: E402
from configs import common  # noqa: E402
from imgen import families  # noqa: E402
from imgen.core import backend  # noqa: E402
from imgen.core import runtime  # noqa: E402
from imgen.evaluation.experiment import Experiment  # noqa: E402
from imgen.models import unet  # noqa: E402

flags.DEFINE_list("families", sorted(families.FAMILIES), "Families to time.")
flags.DEFINE_integer("steps", 10, "Timed steps per round.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds.")
flags.DEFINE_bool("resize_upsampling", False, "Also the U-Nets' gather upsampling (before).")
FLAGS = flags.FLAGS

U_NETS = ("diffusion", "text_to_image", "speech_to_image")


def _resize_2x(h):
  return jax.image.resize(h, (h.shape[0], 2 * h.shape[1], 2 * h.shape[2], h.shape[3]), "nearest")


def _variants(family: str) -> dict:
  """{name: context in which the step is traced}."""
  variants = {
    "cpu forms": lambda: backend.layer_forms("cpu"),
    "xla forms": lambda: backend.layer_forms("xla"),
  }
  if FLAGS.resize_upsampling and family in U_NETS:
    variants["cpu forms, resize upsampling"] = lambda: _stacked(
      backend.layer_forms("cpu"), mock.patch.object(unet, "upsample_nearest_2x", _resize_2x)
    )
  return variants


@contextlib.contextmanager
def _stacked(*contexts):
  with contextlib.ExitStack() as stack:
    for c in contexts:
      stack.enter_context(c)
    yield


def measure(family: str) -> list[str]:
  config = common.default_config(family)
  experiment = Experiment.create(config)
  batch = dict(next(experiment.train_batches(0)))
  images = batch.pop("image")
  runs = {}
  for name, context in _variants(family).items():
    with context():  # The step is traced (and compiled) on its first call, here.
      runs[name] = timing.step_runner(experiment.family, images, guard=True, **batch)
  rates = {name: [] for name in runs}
  for r in range(FLAGS.rounds):
    for name, (run, _) in runs.items():
      rates[name].append(run(FLAGS.steps))
    print(f"{family} round {r}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rates.items()))
  base = statistics.median(rates["cpu forms"])
  rows = []
  for name, values in rates.items():
    median = statistics.median(values)
    compile_s = runs[name][1]
    rows.append(
      f"| {family} | {name} | {config.train.batch_size} | {median:.2f} | {median / base:.2f} | "
      f"{compile_s:.1f} |"
    )
  return rows


def main(argv):
  del argv
  runtime.configure_xla()
  rows = []
  for family in FLAGS.families:
    rows += measure(family)
  print(
    f"\nJAX {jax.__version__}, {jax.device_count()} {jax.default_backend()} device(s), "
    f"medians of {FLAGS.rounds} rounds\n"
    "| family | layers | batch | steps/s | x cpu forms | compile s |\n|---|---|---|---|---|---|"
  )
  print("\n".join(rows))


if __name__ == "__main__":
  app.run(main)
