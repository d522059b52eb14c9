"""Throughput of the GAN train step (images/s, compile excluded), optionally
side by side with the same architecture in PyTorch.

  python benchmarks/train_step.py                       # DCGAN 64x64x3, batch 64
  python benchmarks/train_step.py --torch --rounds=3    # and the PyTorch peer
  python benchmarks/train_step.py --image_size=28 --channels=1 --width=64
  python benchmarks/train_step.py --torch --steps_per_dispatch=10   # as configs/gan.py trains

With --torch the two alternate `rounds` times in one process (same threads,
same machine state) and the ratio of their medians is printed, so it stays
comparable on a shared, noisy machine. Prints a markdown row for BENCHMARKS.md.
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
from benchmarks import torch_dcgan  # noqa: E402
from configs import gan as gan_config  # noqa: E402
from imgen.core import runtime  # noqa: E402
from imgen.data import DataSpec  # noqa: E402
from imgen.families.gan import GANFamily  # noqa: E402

flags.DEFINE_integer("image_size", 64, "Resolution.")
flags.DEFINE_integer("channels", 3, "Image channels.")
flags.DEFINE_integer("batch_size", 64, "Global batch.")
flags.DEFINE_integer("width", 64, "ngf = ndf.")
flags.DEFINE_integer("latent_dim", 100, "nz.")
flags.DEFINE_enum("upsample", "subpixel", ["subpixel", "transpose"], "Transposed-conv form.")
flags.DEFINE_integer("steps", 10, "Timed steps per round (rounded up to whole calls).")
flags.DEFINE_integer("steps_per_dispatch", 1, "Steps per call, as train.steps_per_dispatch.")
flags.DEFINE_integer("rounds", 1, "Alternating JAX/PyTorch rounds.")
flags.DEFINE_bool("torch", False, "Also time the PyTorch peer.")
FLAGS = flags.FLAGS


def make_jax_runner():
  config = gan_config.get_config()
  config.model.image_size = FLAGS.image_size
  config.model.g_width = config.model.d_width = FLAGS.width
  config.model.latent_dim = FLAGS.latent_dim
  config.model.upsample = FLAGS.upsample
  family = GANFamily(config, DataSpec.of_images(FLAGS.image_size, FLAGS.channels))
  n = jax.local_device_count()
  shape = (n, FLAGS.batch_size // n, FLAGS.image_size, FLAGS.image_size, FLAGS.channels)
  images = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
  k = FLAGS.steps_per_dispatch
  return timing.step_runner(family, images, guard=k > 1, steps_per_call=k)


def main(argv):
  runtime.configure_xla()
  del argv
  run_jax, compile_s = make_jax_runner()
  print(f"JAX {jax.__version__} on {jax.devices()}; first step (compile) {compile_s:.1f}s")
  jax_rates, torch_rates = [], []
  for r in range(FLAGS.rounds):
    jax_rates.append(run_jax(-(-FLAGS.steps // FLAGS.steps_per_dispatch)))
    print(f"round {r}: JAX {jax_rates[-1]:.3f} steps/s", flush=True)
    if FLAGS.torch:
      torch_rates.append(
        torch_dcgan.torch_dcgan_steps_per_sec(
          FLAGS.batch_size, FLAGS.image_size, FLAGS.channels, steps=FLAGS.steps, warmup=1
        )
      )
      print(f"round {r}: PyTorch {torch_rates[-1]:.3f} steps/s", flush=True)
  jax_rate = statistics.median(jax_rates)
  k = FLAGS.steps_per_dispatch
  per_call = f" ({k} steps per call)" if k > 1 else ""
  row = (
    f"| DCGAN {FLAGS.image_size}x{FLAGS.image_size}x{FLAGS.channels} w{FLAGS.width}{per_call} "
    f"| {FLAGS.batch_size} | {FLAGS.upsample} | {jax_rate:.3f} | {jax_rate * FLAGS.batch_size:.1f} "
    f"| {compile_s:.1f} |"
  )
  if torch_rates:
    torch_rate = statistics.median(torch_rates)
    row += f" {torch_rate:.3f} | {jax_rate / torch_rate:.2f} |"
  else:
    row += " - | - |"
  print(
    "| model | batch | upsample | JAX steps/s | JAX images/s | compile s | PyTorch steps/s "
    "| JAX/PyTorch |"
  )
  print(row)


if __name__ == "__main__":
  app.run(main)
