"""The SNGAN CIFAR-10 train step (ResNet G and D, batch 64, n_dis 5) side by
side with its PyTorch peer (`benchmarks/torch_sngan.py`).

  python benchmarks/sngan_step.py                                  # all variants
  python benchmarks/sngan_step.py --variants=sngan --rounds=3 --steps=2
  python benchmarks/sngan_step.py --g_width=64 --d_width=64        # a quick look

Variants: `sngan` (spectral norm, hinge; configs/sngan_cifar10.py),
`wgan_gp` (no spectral norm, gradient penalty; configs/wgan_gp_cifar10.py with
SNGAN's G widths, so only the objective differs) and `sngan_diffaugment`
(sngan with DiffAugment colour, translation, cutout). Each round times JAX,
then PyTorch, in one process with the same threads; the ratio of the medians
is printed as a markdown row for BENCHMARKS.md.
"""

import os
import statistics
import sys

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import timing  # noqa: E402
from configs import sngan_cifar10  # noqa: E402
from imgen.core import runtime  # noqa: E402
from imgen.data import DataSpec  # noqa: E402
from imgen.families.gan import GANFamily  # noqa: E402

VARIANTS = ("sngan", "wgan_gp", "sngan_diffaugment")
flags.DEFINE_list("variants", list(VARIANTS), f"Any of {VARIANTS}.")
flags.DEFINE_integer("batch_size", 64, "Global batch.")
flags.DEFINE_integer("n_dis", 5, "Critic steps per generator step.")
flags.DEFINE_integer("g_width", 256, "Generator channels (SNGAN CIFAR-10: 256).")
flags.DEFINE_integer("d_width", 128, "Discriminator channels (SNGAN CIFAR-10: 128).")
flags.DEFINE_integer("steps", 2, "Timed steps per round.")
flags.DEFINE_integer("rounds", 2, "Alternating JAX/PyTorch rounds.")
flags.DEFINE_bool("torch", True, "Also time the PyTorch peer.")
FLAGS = flags.FLAGS


def jax_config(variant: str):
  config = sngan_cifar10.get_config()
  config.model.g_channels = (FLAGS.g_width,) * 4
  config.model.d_channels = (FLAGS.d_width,) * 4
  config.objective.n_dis = FLAGS.n_dis
  if variant == "wgan_gp":
    config.model.update(spectral_norm=False, d_pool="mean")
    config.objective.loss = "wgan_gp"
  if variant == "sngan_diffaugment":
    config.objective.diffaugment = "color,translation,cutout"
  return config


def make_jax_runner(variant: str):
  family = GANFamily(jax_config(variant), DataSpec.of_images(32, 3))
  n, k = jax.local_device_count(), FLAGS.n_dis
  shape = (n, k, FLAGS.batch_size // n, 32, 32, 3)
  images = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
  return timing.step_runner(family, images if k > 1 else images[:, 0])


def main(argv):
  del argv
  runtime.configure_xla()
  rows = []
  for variant in FLAGS.variants:
    run_jax, compile_s = make_jax_runner(variant)
    torch_step = None
    if FLAGS.torch:
      import torch  # pylint: disable=g-import-not-at-top

      from benchmarks import torch_sngan  # pylint: disable=g-import-not-at-top

      torch.set_num_threads(os.cpu_count())
      torch_step = torch_sngan.make_step(
        variant, FLAGS.batch_size, FLAGS.n_dis, (FLAGS.g_width,) * 4, (FLAGS.d_width,) * 4
      )
    jax_rates, torch_rates = [], []
    for r in range(FLAGS.rounds):
      jax_rates.append(run_jax(FLAGS.steps))
      line = f"{variant} round {r}: JAX {jax_rates[-1]:.4f} steps/s"
      if torch_step is not None:
        torch_rates.append(torch_sngan.steps_per_sec(torch_step, FLAGS.steps))
        line += f", PyTorch {torch_rates[-1]:.4f} steps/s"
      print(line, flush=True)
    jax_rate = statistics.median(jax_rates)
    row = f"| {variant} | {FLAGS.g_width}/{FLAGS.d_width} | {FLAGS.batch_size} | {FLAGS.n_dis} "
    row += f"| {jax_rate:.4f} | {compile_s:.0f} |"
    if torch_rates:
      torch_rate = statistics.median(torch_rates)
      row += f" {torch_rate:.4f} | {jax_rate / torch_rate:.2f} |"
    rows.append(row)
  print(f"JAX {jax.__version__}, {jax.devices()}")
  columns = "variant | G/D width | batch | n_dis | JAX steps/s | compile s | PyTorch steps/s"
  print(f"| {columns} | JAX/PyTorch |")
  print("|---|---|---|---|---|---|---|---|")
  print("\n".join(rows))


if __name__ == "__main__":
  app.run(main)
