"""Throughput of the texture networks side by side with their PyTorch peers.

  python benchmarks/texture.py --rounds=3          # configs/texture.py's networks
  python benchmarks/texture.py --rounds=3 --no-torch

Times (1) the spatial GAN's train step at the config's batch and crop size,
(2) the generator's images/s at 256x256 and 512x512 (batch 1 and 8), and
(3) one optimiser step's work of the Gram-matching synthesis at 256x256 (the
loss and its gradient with respect to the pixels, periodic), imgen and
PyTorch alternating `rounds` times in one process; prints markdown rows with
the ratio of the medians for BENCHMARKS.md.
"""

import os
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import timing  # noqa: E402
from benchmarks import torch_texture  # noqa: E402
from configs import texture as texture_config  # noqa: E402
from imgen.core import runtime  # noqa: E402
from imgen.data import DataSpec  # noqa: E402
from imgen.families.gan import GANFamily  # noqa: E402
from imgen.methods import texture  # noqa: E402

flags.DEFINE_integer("steps", 10, "Timed calls per round.")
flags.DEFINE_integer("rounds", 1, "Alternating imgen/PyTorch rounds.")
flags.DEFINE_bool("torch", True, "Also time the PyTorch peers.")
flags.DEFINE_string("sides", "256,512", "Generator output sides.")
FLAGS = flags.FLAGS


def _timed(fn, calls: int) -> float:
  """Calls/s of `fn()` (which blocks) after one untimed call."""
  fn()
  t = time.perf_counter()
  for _ in range(calls):
    fn()
  return calls / (time.perf_counter() - t)


def _row(name: str, unit: str, ours: list[float], theirs: list[float]) -> str:
  a = statistics.median(ours)
  if not theirs:
    return f"| {name} | {a:.2f} {unit} | - | - |"
  b = statistics.median(theirs)
  return f"| {name} | {a:.2f} {unit} | {b:.2f} {unit} | {a / b:.2f} |"


def main(argv):
  del argv
  runtime.configure_xla()
  config = texture_config.get_config()
  m, t = config.model, config.texture
  size, batch = m.image_size, config.train.batch_size
  family = GANFamily(config, DataSpec.of_images(size, 1))
  n = jax.local_device_count()
  images = (
    np.random.default_rng(0).uniform(-1, 1, (n, batch // n, size, size, 1)).astype(np.float32)
  )
  run_step, compile_s = timing.step_runner(family, images)
  print(f"JAX {jax.__version__} on {jax.devices()}; SGAN step compile {compile_s:.1f}s")
  state = family.init_state(jax.random.key(0))
  variables, generator = state.g.variables(), family.generator
  apply = jax.jit(lambda z: generator.apply(variables, z, train=False))
  features = texture.RandomFeatures.create(t.features, 1, "texture.features")
  target = texture.grams(
    features,
    jnp.zeros((1, 256, 256, 1)) + jax.random.uniform(jax.random.key(2), (1, 256, 256, 1)),
    256,
  )
  loss_grad = jax.jit(jax.grad(lambda x: texture.style_loss(features, x, target, 256, True)))
  x = jax.random.uniform(jax.random.key(3), (1, 256, 256, 1)) * 2 - 1

  sides = [int(s) for s in FLAGS.sides.split(",")]
  kernels = [int(k) for k in t.features.kernel_sizes.split(",")]
  rates = {}
  add = lambda key, value: rates.setdefault(key, []).append(value)
  for r in range(FLAGS.rounds):
    add(("step", "imgen"), run_step(FLAGS.steps))
    if FLAGS.torch:
      add(
        ("step", "torch"),
        torch_texture.sgan_steps_per_second(
          batch, size, 1, m.noise_channels, m.g_channels, m.d_channels, steps=FLAGS.steps
        ),
      )
    for side in sides:
      for b in (1, 8):
        z = jax.random.normal(jax.random.key(r), (b, side // 16, side // 16, m.noise_channels))
        add(
          (f"G {side}x{side} batch {b}", "imgen"),
          b * _timed(lambda z=z: apply(z).block_until_ready(), FLAGS.steps),
        )
        if FLAGS.torch:
          add(
            (f"G {side}x{side} batch {b}", "torch"),
            torch_texture.generator_images_per_second(
              side, b, 1, m.noise_channels, m.g_channels, repeats=FLAGS.steps
            ),
          )
    add(("gram", "imgen"), _timed(lambda: loss_grad(x).block_until_ready(), FLAGS.steps))
    if FLAGS.torch:
      add(
        ("gram", "torch"),
        torch_texture.gram_loss_steps_per_second(
          256, kernels, t.features.channels, t.features.levels, steps=FLAGS.steps
        ),
      )
    print(
      f"round {r}: " + ", ".join(f"{k[0]} {k[1]} {v[-1]:.2f}" for k, v in rates.items()), flush=True
    )

  print("| what | imgen | PyTorch eager | imgen/PyTorch |")
  print("|---|---|---|---|")
  print(
    _row(
      f"SGAN train step, {size}x{size}x1, batch {batch}",
      "steps/s",
      rates[("step", "imgen")],
      rates.get(("step", "torch"), []),
    )
  )
  for side in sides:
    for b in (1, 8):
      key = f"G {side}x{side} batch {b}"
      print(
        _row(
          f"generator {side}x{side}, batch {b}",
          "images/s",
          rates[(key, "imgen")],
          rates.get((key, "torch"), []),
        )
      )
  print(
    _row(
      "Gram loss + pixel gradient, 256x256, periodic",
      "calls/s",
      rates[("gram", "imgen")],
      rates.get(("gram", "torch"), []),
    )
  )


if __name__ == "__main__":
  app.run(main)
