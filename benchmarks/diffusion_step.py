"""Throughput of the diffusion U-Net: the train step side by side with its
PyTorch peer, and sampling images/s by sampler and number of steps.

  python benchmarks/diffusion_step.py --torch --rounds=3      # configs/diffusion.py's U-Net
  python benchmarks/diffusion_step.py --sampling=ddim:50,heun:18,dpmpp_2m:20,ddpm
  python benchmarks/diffusion_step.py --mults=1,2,2 --attention= --width=32   # a variant
  python benchmarks/diffusion_step.py --image_size=32 --channels=3 --width=64
  python benchmarks/diffusion_step.py --paper --batch_size=8 --torch --rounds=3  # DDPM CIFAR-10

imgen's train step is timed as the trainer runs it: behind the non-finite
guard, buffers donated, the config's `train.steps_per_dispatch` steps per call
(`--steps_per_dispatch` overrides it). The train steps of imgen and PyTorch
alternate `rounds` times in one process (same threads, same machine state);
the ratio of their medians is printed.
Sampling is timed on one global batch of `--sample_batch` images per call
(compile excluded): `sampler:steps` for each listed sampler of
imgen.methods.samplers (on the config's objective, or `--objective`), and `ddpm`
for DDPM's ancestral sampler over all T = 1000 levels. Prints markdown rows for BENCHMARKS.md.
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
from benchmarks import torch_unet  # noqa: E402
from configs import ddpm_cifar10  # noqa: E402
from configs import diffusion as diffusion_config  # noqa: E402
from imgen.core import runtime  # noqa: E402
from imgen.data import DataSpec  # noqa: E402
from imgen.families.diffusion import DiffusionFamily  # noqa: E402
from imgen.methods import samplers  # noqa: E402

flags.DEFINE_bool(
  "paper", False, "configs/ddpm_cifar10.py's U-Net (32x32x3, 35.7M; size flags ignored)."
)
flags.DEFINE_integer("image_size", 28, "Resolution.")
flags.DEFINE_integer("channels", 1, "Image channels.")
flags.DEFINE_integer("batch_size", 64, "Global train batch.")
flags.DEFINE_integer("width", None, "U-Net channels (default: configs/diffusion.py's).")
flags.DEFINE_integer("steps", 10, "Timed train steps per round (rounded up to whole calls).")
flags.DEFINE_integer("steps_per_dispatch", None, "Steps per call (default: the config's).")
flags.DEFINE_integer("rounds", 1, "Alternating imgen/PyTorch rounds.")
flags.DEFINE_bool("torch", False, "Also time the PyTorch peer.")
flags.DEFINE_list("mults", None, "U-Net channel multipliers (default: the config's).")
flags.DEFINE_list("attention", None, "Self-attention resolutions (default: the config's; '' none).")
flags.DEFINE_integer("blocks", None, "Residual blocks per resolution (default: the config's).")
flags.DEFINE_string("objective", None, "diffusion.objective for sampling (default: the config's).")
flags.DEFINE_list("sampling", [], "sampler:steps specs and/or 'ddpm' to time sampling for.")
flags.DEFINE_integer("sample_batch", 100, "Images per sampling call.")
FLAGS = flags.FLAGS


def _config():
  if FLAGS.paper:
    config = ddpm_cifar10.get_config()
    FLAGS.image_size, FLAGS.channels = config.model.image_size, 3
    return config
  config = diffusion_config.get_config()
  config.model.image_size = FLAGS.image_size
  if FLAGS.width:
    config.model.channels = FLAGS.width
  if FLAGS.image_size % 4:  # Three levels need a multiple of 4.
    raise ValueError(f"--image_size={FLAGS.image_size}: use a multiple of 4.")
  if FLAGS.image_size != 28:
    config.model.attention_resolutions = (FLAGS.image_size // 4,)
  if FLAGS.mults:
    config.model.channel_mults = tuple(int(m) for m in FLAGS.mults)
  if FLAGS.attention is not None:
    config.model.attention_resolutions = tuple(int(a) for a in FLAGS.attention if a)
  if FLAGS.blocks is not None:
    config.model.num_res_blocks = FLAGS.blocks
  if FLAGS.objective:
    config.diffusion.objective = FLAGS.objective
  return config


def sampling_rate(config, family, spec: str) -> tuple[float, float]:
  """(images/s, compile s) of one sampling call of `sample_batch` images."""
  config = config.copy_and_resolve_references()
  if spec == "ddpm":  # DDPM's ancestral sampler needs the DDPM objective (the same network).
    config.diffusion.objective = "ddpm"
    config.sample.sampler = "ddpm"
  else:
    sampler, steps = spec.split(":")
    config.sample.update(sampler=sampler, steps=int(steps))
  family = DiffusionFamily(config, DataSpec.of_images(FLAGS.image_size, FLAGS.channels))
  return timing.sampling_rate(family, "diffusion", FLAGS.sample_batch)


def main(argv):
  runtime.configure_xla()
  del argv
  config = _config()
  m = config.model
  family = DiffusionFamily(config, DataSpec.of_images(FLAGS.image_size, FLAGS.channels))
  n = jax.local_device_count()
  shape = (n, FLAGS.batch_size // n, FLAGS.image_size, FLAGS.image_size, FLAGS.channels)
  images = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
  per_call = FLAGS.steps_per_dispatch or config.train.steps_per_dispatch
  run_jax, compile_s = timing.trainer_step_runner(family, images, per_call)
  print(f"JAX {jax.__version__} on {jax.devices()}; {per_call} steps per call; first call")
  print(f"(compile) {compile_s:.1f}s")
  name = (
    f"U-Net {FLAGS.image_size}x{FLAGS.image_size}x{FLAGS.channels} ch{m.channels} "
    f"x{tuple(m.channel_mults)} blocks {m.num_res_blocks} "
    f"attention {tuple(m.attention_resolutions)}"
  )
  if FLAGS.rounds:
    jax_rates, torch_rates = [], []
    for r in range(FLAGS.rounds):
      jax_rates.append(run_jax(FLAGS.steps))
      print(f"round {r}: imgen {jax_rates[-1]:.3f} steps/s", flush=True)
      if FLAGS.torch:
        torch_rates.append(
          torch_unet.steps_per_second(
            FLAGS.batch_size,
            FLAGS.image_size,
            FLAGS.channels,
            *torch_unet.layout(m),
            steps=FLAGS.steps,
            dropout=m.dropout,
          )
        )
        print(f"round {r}: PyTorch {torch_rates[-1]:.3f} steps/s", flush=True)
    rate = statistics.median(jax_rates)
    images_per_s = rate * FLAGS.batch_size
    row = f"| {name} | {FLAGS.batch_size} | {rate:.3f} | {images_per_s:.1f} | {compile_s:.1f} |"
    if torch_rates:
      peer = statistics.median(torch_rates)
      row += f" {peer:.3f} | {rate / peer:.2f} |"
    else:
      row += " - | - |"
    print("| model | batch | imgen steps/s | imgen images/s | compile s | PyTorch steps/s", end="")
    print(" | imgen/PyTorch |")
    print(row)
  rows = []
  for spec in FLAGS.sampling:
    rate, compile_sampler = sampling_rate(config, family, spec)
    if spec == "ddpm":
      label = "ddpm ancestral, 1000 steps, 1000 evaluations"
    else:
      sampler, steps = spec.split(":")
      nfe = samplers.evaluations(sampler, int(steps))
      label = f"{config.diffusion.objective} {sampler}, {steps} steps, {nfe} evaluations"
    rows.append(f"| {name} | {label} | {FLAGS.sample_batch} | {rate:.2f} | {compile_sampler:.1f} |")
    print(rows[-1], flush=True)
  if rows:
    print("| model | sampler | batch | images/s | compile s |")
    print("\n".join(rows))


if __name__ == "__main__":
  app.run(main)
