"""Throughput of the segmentation U-Net: the train step side by side with its
PyTorch peer, and the input pipeline (images and masks) against the step.

  python benchmarks/segment_step.py --torch --rounds=3      # configs/segment.py's U-Net
  python benchmarks/segment_step.py --pipeline --data_dir=~/tensorflow_datasets
  python benchmarks/segment_step.py --torch --width=32 --depth=4

imgen's train step is timed as the trainer runs it: behind the non-finite
guard, buffers donated, the config's `train.steps_per_dispatch` steps per call
(`--steps_per_dispatch` overrides it). The train steps of imgen and PyTorch
alternate `rounds` times in one process (same threads, same machine state);
the ratio of their medians is printed.
`--pipeline` times `--pipeline_batches` train batches of `--dataset` (digit_scenes)
through imgen's input pipeline (grain, resizing, per-device split) and
prints its images/s beside the step's. Prints markdown rows for BENCHMARKS.md.
"""

import os
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import peer_counts  # noqa: E402
from benchmarks import timing  # noqa: E402
from benchmarks import torch_segunet  # noqa: E402
from configs import segment as segment_config  # noqa: E402
from imgen import data  # noqa: E402
from imgen.core import runtime  # noqa: E402
from imgen.data.spec import MASK  # noqa: E402
from imgen.data.spec import DataSpec  # noqa: E402
from imgen.data.spec import Field  # noqa: E402
from imgen.families.segment import SegmentationFamily  # noqa: E402

flags.DEFINE_integer("image_size", 64, "Resolution.")
flags.DEFINE_integer("batch_size", None, "Global train batch (default: the config's).")
flags.DEFINE_integer("width", None, "U-Net width (default: the config's).")
flags.DEFINE_integer("depth", None, "U-Net depth (default: the config's).")
flags.DEFINE_list("channel_mults", None, "Channel multiples per level (default: the config's).")
flags.DEFINE_float("deep_supervision", None, "seg.deep_supervision (default: the config's).")
flags.DEFINE_integer("steps", 10, "Timed train steps per round (rounded up to whole calls).")
flags.DEFINE_integer("steps_per_dispatch", None, "Steps per call (default: the config's).")
flags.DEFINE_integer("rounds", 1, "Alternating imgen/PyTorch rounds.")
flags.DEFINE_bool("torch", False, "Also time the PyTorch peer.")
flags.DEFINE_bool("torch_compile", False, "Also time the peer under torch.compile.")
flags.DEFINE_bool("pipeline", False, "Also time the input pipeline on --dataset.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir for --pipeline (default: TFDS's).")
flags.DEFINE_string("dataset", "digit_scenes", "The dataset --pipeline reads.")
flags.DEFINE_integer("pipeline_batches", 200, "Batches the pipeline timing reads.")
FLAGS = flags.FLAGS


def _config():
  config = segment_config.get_config()
  config.model.image_size = FLAGS.image_size
  for name in ("width", "depth"):
    if getattr(FLAGS, name):
      config.model[name] = getattr(FLAGS, name)
  if FLAGS.channel_mults is not None:
    config.model.channel_mults = tuple(int(m) for m in FLAGS.channel_mults)
  if FLAGS.deep_supervision is not None:
    config.seg.deep_supervision = FLAGS.deep_supervision
  if FLAGS.batch_size:
    config.train.batch_size = FLAGS.batch_size
  return config


def pipeline_rate(config) -> float:
  """Images/s of imgen's train pipeline on --dataset (after one warm-up batch)."""
  builder = data.get_builder(FLAGS.dataset, FLAGS.data_dir)
  spec = DataSpec.from_builder(builder, "image", config.model.image_size)
  batches = data.make_train_iterator(
    builder,
    split="train",
    spec=spec,
    resize=config.data.resize,
    global_batch_size=config.train.batch_size,
    seed=0,
  )
  next(batches)
  t = time.perf_counter()
  for _ in range(FLAGS.pipeline_batches):
    batch = next(batches)
  assert batch["mask"].dtype == np.int32
  return FLAGS.pipeline_batches * config.train.batch_size / (time.perf_counter() - t)


def main(argv):
  runtime.configure_xla()
  del argv
  config = _config()
  m, size, batch = config.model, FLAGS.image_size, config.train.batch_size
  fields = {
    "image": Field("image", "image", (size, size, 3), "uint8"),
    "mask": Field(MASK, "mask", (size, size), "uint8"),
  }
  spec = DataSpec(size, fields)
  family = SegmentationFamily(config, spec)
  if FLAGS.torch or FLAGS.torch_compile:  # The peer must be the same network.
    count = peer_counts.check_family(timing.import_torch("segmentation U-Net"), config, spec)
    print(f"imgen and its PyTorch peer: {count:,} parameters each")
  n = jax.local_device_count()
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (n, batch // n, size, size, 3)).astype(np.float32)
  masks = rng.integers(0, m.num_classes, (n, batch // n, size, size)).astype(np.int32)
  per_call = FLAGS.steps_per_dispatch or config.train.steps_per_dispatch
  run_jax, compile_s = timing.trainer_step_runner(family, images, per_call, mask=masks)
  print(f"JAX {jax.__version__} on {jax.devices()}; {per_call} steps per call; first call")
  print(f"(compile) {compile_s:.1f}s")
  mults, deep = tuple(m.channel_mults), config.seg.deep_supervision
  name = f"U-Net {size}x{size}x3 depth {m.depth} width {m.width} {m.norm}"
  name += f" mults {mults}" * bool(mults) + f" deep supervision {deep}" * bool(deep)
  peer = lambda compile: torch_segunet.steps_per_second(
    batch,
    size,
    3,
    m.num_classes,
    m.depth,
    m.width,
    steps=FLAGS.steps,
    compile=compile,
    mults=mults,
    deep_supervision=deep,
  )
  jax_rates, torch_rates, compiled_rates = [], [], []
  for r in range(FLAGS.rounds):
    jax_rates.append(run_jax(FLAGS.steps))
    print(f"round {r}: imgen {jax_rates[-1]:.3f} steps/s", flush=True)
    if FLAGS.torch:
      torch_rates.append(peer(False))
      print(f"round {r}: PyTorch eager {torch_rates[-1]:.3f} steps/s", flush=True)
    if FLAGS.torch_compile:
      compiled_rates.append(peer(True))
      print(f"round {r}: PyTorch compiled {compiled_rates[-1]:.3f} steps/s", flush=True)
  rate = statistics.median(jax_rates)
  print(
    "| model | batch | imgen steps/s | imgen images/s | compile s | PyTorch eager steps/s", end=""
  )
  print(" | imgen/eager | PyTorch compiled steps/s | imgen/compiled |")
  row = f"| {name} | {batch} | {rate:.3f} | {rate * batch:.1f} | {compile_s:.1f} |"
  for rates in (torch_rates, compiled_rates):
    row += (
      f" {statistics.median(rates):.3f} | {rate / statistics.median(rates):.2f} |"
      if rates
      else " - | - |"
    )
  print(row)
  if FLAGS.pipeline:
    images_per_s = pipeline_rate(config)
    print(
      f"| input pipeline, {FLAGS.dataset} {size}x{size} + masks | {batch} | {images_per_s:.0f} "
      f"images/s | {images_per_s / (rate * batch):.0f}x the step |"
    )


if __name__ == "__main__":
  app.run(main)
