"""Every default family's train step and the paper networks, on whatever device JAX finds.

  python benchmarks/accelerator.py                       # full sizes, float32 and bfloat16
  python benchmarks/accelerator.py --smoke               # toy sizes, seconds (on CPU: the tests)
  python benchmarks/accelerator.py --only=diffusion,ddpm_cifar10 --dtypes=bfloat16

Rows: each family's default config (`configs/<family>.py`, its own dataset
through imgen's input pipeline; `--data_dir` or TFDS's default) and the paper
networks on random batches of their data's shape: DCGAN 64x64x3 (PyTorch's
tutorial network), SNGAN CIFAR-10 (`configs/sngan_cifar10.py`), the DDPM
CIFAR-10 U-Net (`configs/ddpm_cifar10.py`, 35.7M parameters). Each is the
trainer's step (non-finite guard, buffers donated) on one batch kept on the
devices, timed after a warm-up call, in each of `--dtypes` (`model.dtype`:
parameters stay float32). Columns:
- images/s, and the compile time (lowering and XLA's compile, one program);
- peak device memory of the step, from XLA's memory analysis of the compiled
  program (arguments + temporaries + outputs - donated), so rows do not mix;
- model FLOPs utilisation: XLA's cost analysis of the step (FLOPs per call)
  times calls/s over the devices' peak (`--peak_tflops`, or looked up for
  H100/H200/A100/TPU v4/v5e by the device kind; '-' where unknown, such as CPUs);
- the PyTorch eager peer's images/s on the same device (the GAN, VAE and CNN
  peers of benchmarks/peers.py) where torch sees that device: `--torch=auto`
  runs them on a CUDA device only.
Prints each row as it is measured and writes the table to `--out`.
"""

import datetime
import os
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import timing  # noqa: E402
from configs import common  # noqa: E402
from configs import ddpm_cifar10  # noqa: E402
from configs import gan as gan_config  # noqa: E402
from configs import sngan_cifar10  # noqa: E402
from imgen import families  # noqa: E402
from imgen.core import guards  # noqa: E402
from imgen.core import parallel  # noqa: E402
from imgen.core import runtime  # noqa: E402
from imgen.data import DataSpec  # noqa: E402
from imgen.evaluation.experiment import Experiment  # noqa: E402

PAPER = ("dcgan64", "sngan_cifar10", "ddpm_cifar10")
flags.DEFINE_bool("smoke", False, "Toy sizes (each config's :smoke variant) and 2 timed calls.")
flags.DEFINE_list("only", None, f"Rows to run: family names and/or {PAPER} (default: all).")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "model.dtype values.")
flags.DEFINE_integer("steps", 20, "Timed calls per row (after the warm-up call).")
flags.DEFINE_float("peak_tflops", None, "The devices' peak TFLOP/s each (default: looked up).")
flags.DEFINE_enum("torch", "auto", ["auto", "yes", "no"], "PyTorch peers (auto: on CUDA only).")
flags.DEFINE_string("out", "accelerator.md", "Markdown file the table is written to.")
FLAGS = flags.FLAGS

# Dense peak TFLOP/s per chip by device kind and dtype, from the vendors' data
# sheets (H100/H200 SXM; float32 is TF32 on tensor cores on NVIDIA GPUs, which
# XLA uses for float32 convolutions and matmuls at default precision).
PEAK_TFLOPS = {
  "H100": {"bfloat16": 989.0, "float32": 494.0},
  "H200": {"bfloat16": 989.0, "float32": 494.0},
  "A100": {"bfloat16": 312.0, "float32": 156.0},
  "TPU v4": {"bfloat16": 275.0},
  "TPU v5 lite": {"bfloat16": 197.0},
  "TPU v5e": {"bfloat16": 197.0},
}


def peak_tflops(device_kind: str, dtype: str) -> float | None:
  """Per-device peak for `dtype`, or None where unknown (CPUs, other chips)."""
  if FLAGS.peak_tflops:
    return FLAGS.peak_tflops
  for kind, peaks in PEAK_TFLOPS.items():
    if kind.lower() in device_kind.lower():
      return peaks.get(dtype)
  return None


def _paper_config(name: str):
  """(config, spec) of a paper network, on random batches of its data's shape."""
  arg = "smoke" if FLAGS.smoke else None
  if name == "dcgan64":
    config = gan_config.get_config(arg)
    config.model.image_size = 64
    if not FLAGS.smoke:  # PyTorch's DCGAN tutorial: ngf = ndf = 64, nz = 100.
      config.model.update(g_width=64, d_width=64, latent_dim=100)
    return config, DataSpec.of_images(64, 3)
  module = {"sngan_cifar10": sngan_cifar10, "ddpm_cifar10": ddpm_cifar10}[name]
  config = module.get_config(arg)
  classes = 10 if config.model.get("conditional") else None
  return config, DataSpec.of_images(32, 3, classes)


def _random_batch(spec: DataSpec, batch: int, k: int) -> dict[str, np.ndarray]:
  """A step's batch laid out for this process's devices as the trainer makes it:
  (devices, b, ...), or (devices, k, b, ...) for a family that takes k per step."""
  n, rng = jax.local_device_count(), np.random.default_rng(0)
  lead = (n, batch // n) if k == 1 else (n, k, batch // n)
  out = {"image": rng.uniform(-1, 1, (*lead, *spec.image.shape)).astype(np.float32)}
  if "label" in spec.fields:
    num_classes = spec.fields["label"].num_classes
    out["label"] = rng.integers(0, num_classes, lead).astype(np.int32)
  return out


def _row_inputs(name: str, dtype: str):
  """(family, one device batch of train inputs, config) for row `name`."""
  if name in PAPER:
    config, spec = _paper_config(name)
    config.model.dtype = dtype
    family = families.create(config, spec)
    batch = _random_batch(spec, config.train.batch_size, family.batches_per_step)
    return family, batch, config
  config = common.default_config(name, "smoke" if FLAGS.smoke else None)
  config.model.dtype = dtype
  experiment = Experiment.create(config)
  return experiment.family, next(experiment.train_batches(0)), config


def _peer_images_per_s(name: str, config) -> float | None:
  """The PyTorch eager peer's images/s on the CUDA device, where there is one."""
  if FLAGS.torch == "no" or name not in ("gan", "vae", "cnn", "dcgan64"):
    return None
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  on_cuda = torch.cuda.is_available() and jax.default_backend() == "gpu"
  if FLAGS.torch == "auto" and not on_cuda:
    return None
  family, channels = ("gan", 3) if name == "dcgan64" else (name, 1)
  peer = timing.torch_peer(family, config, FLAGS.steps, channels)
  with torch.device("cuda" if on_cuda else "cpu"):  # The peers' tensors and modules.
    return peer() * config.train.batch_size


def measure(name: str, dtype: str) -> dict:
  family, batch, config = _row_inputs(name, dtype)
  step = parallel.pmap_step(guards.guard_nonfinite(family.make_train_step()), donate=True)
  state = parallel.replicate(family.init_state(jax.random.key(0)))
  batch = jax.device_put(batch, parallel.device_sharding())
  key = jax.random.key(1)

  t = time.perf_counter()
  compiled = step.lower(state, batch, key).compile()
  compile_s = time.perf_counter() - t
  flops, peak_bytes = timing.program_costs(compiled)  # One replica's program, one call.

  state, metrics = compiled(state, batch, key)  # Warm-up.
  jax.block_until_ready(metrics)
  t = time.perf_counter()
  for _ in range(FLAGS.steps):
    state, metrics = compiled(state, batch, key)
  jax.block_until_ready((state, metrics))
  calls_per_s = FLAGS.steps / (time.perf_counter() - t)
  peak = peak_tflops(jax.devices()[0].device_kind, dtype)
  mfu = flops * calls_per_s / (peak * 1e12) if peak and flops else None
  return {
    "row": name,
    "dtype": dtype,
    "batch": config.train.batch_size,
    "images_per_s": calls_per_s * config.train.batch_size,
    "compile_s": compile_s,
    "peak_mb": None if peak_bytes is None else peak_bytes / 2**20,
    "gflops_per_step": flops * jax.local_device_count() / 1e9,
    "mfu": mfu,
    "torch_images_per_s": _peer_images_per_s(name, config) if dtype == "float32" else None,
  }


HEADER = (
  "| row | dtype | batch | images/s | compile s | peak device MB | GFLOP/step | MFU | "
  "PyTorch eager images/s |\n|---|---|---|---|---|---|---|---|---|"
)


def format_row(r: dict) -> str:
  show = lambda v, fmt: "-" if v is None else format(v, fmt)
  mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
  return (
    f"| {r['row']} | {r['dtype']} | {r['batch']} | {r['images_per_s']:,.0f} | "
    f"{r['compile_s']:.1f} | {show(r['peak_mb'], ',.0f')} | {r['gflops_per_step']:.2f} | "
    f"{mfu} | {show(r['torch_images_per_s'], ',.0f')} |"
  )


def main(argv):
  del argv
  runtime.configure_xla()
  rows = FLAGS.only or [*sorted(families.FAMILIES), *PAPER]
  unknown = set(rows) - set(families.FAMILIES) - set(PAPER)
  if unknown:
    raise app.UsageError(f"--only: {sorted(unknown)}; use {sorted(families.FAMILIES)} or {PAPER}.")
  device = jax.devices()[0]
  title = (
    f"{datetime.date.today()}, {jax.device_count()} x {device.device_kind} "
    f"({jax.default_backend()}), JAX {jax.__version__}{', smoke sizes' if FLAGS.smoke else ''}"
  )
  print(f"{title}\n{HEADER}", flush=True)
  lines = []
  for name in rows:
    for dtype in FLAGS.dtypes:
      lines.append(format_row(measure(name, dtype)))
      print(lines[-1], flush=True)
  with open(FLAGS.out, "w") as f:
    f.write(f"{title}\n\n{HEADER}\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
  app.run(main)
