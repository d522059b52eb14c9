"""The GAN, VAE and CNN train steps side by side with their PyTorch peers.

  python benchmarks/peers.py --rounds=3                     # each default config, 28 and 64
  python benchmarks/peers.py --families=cnn --sizes=64 --torch_compile
  python benchmarks/peers.py --families=vae --steps_per_dispatch=1

Each (family, resolution) is the family's default config (configs/<family>.py)
with `model.image_size` set, on one fixed batch of grey images (and labels for
the CNN), timed as the trainer runs it: behind the non-finite guard, with the
config's `train.steps_per_dispatch` steps per call (`--steps_per_dispatch`
overrides it). The peers (benchmarks/torch_dcgan.py, torch_vae.py,
torch_cnn.py) are the same networks and steps in PyTorch eager (and with
`--torch_compile`, under `torch.compile`). imgen and its peers alternate
`rounds` times in one process (same threads, same machine state) and the
ratio of their medians is printed, with a markdown row for BENCHMARKS.md. A
peer whose parameter count differs from imgen's network is refused
(benchmarks/peer_counts.py).
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
from configs import common  # noqa: E402
from imgen import families  # noqa: E402
from imgen.core import runtime  # noqa: E402
from imgen.data import DataSpec  # noqa: E402

FAMILIES = ("gan", "vae", "cnn")
flags.DEFINE_list("families", list(FAMILIES), f"Some of {FAMILIES}.")
flags.DEFINE_list("sizes", ["28", "64"], "Resolutions.")
flags.DEFINE_integer("steps", 10, "Timed train steps per round (rounded up to whole calls).")
flags.DEFINE_integer("rounds", 3, "Alternating imgen/PyTorch rounds.")
flags.DEFINE_integer("steps_per_dispatch", None, "Steps per call (default: the config's).")
flags.DEFINE_bool("torch", True, "Time the PyTorch eager peer.")
flags.DEFINE_bool("torch_compile", False, "Also time the peer under torch.compile.")
FLAGS = flags.FLAGS


def _config(family: str, size: int):
  config = common.default_config(family)
  config.model.image_size = size
  if FLAGS.steps_per_dispatch:
    config.train.steps_per_dispatch = FLAGS.steps_per_dispatch
  return config


def measure(family: str, size: int) -> str:
  config = _config(family, size)
  num_classes = config.model.num_classes if family == "cnn" else None
  spec = DataSpec.of_images(size, 1, num_classes)
  instance = families.FAMILIES[family](config, spec)
  n, batch, per_call = (
    jax.local_device_count(),
    config.train.batch_size,
    config.train.steps_per_dispatch,
  )
  rng = np.random.default_rng(0)
  fields = {}
  if num_classes:
    fields["label"] = rng.integers(0, num_classes, (n, batch // n)).astype(np.int32)
  images = rng.uniform(-1, 1, (n, batch // n, size, size, 1)).astype(np.float32)
  run, compile_s = timing.trainer_step_runner(instance, images, per_call, **fields)
  if FLAGS.torch or FLAGS.torch_compile:  # A ratio only against the same network.
    import torch  # pylint: disable=g-import-not-at-top

    peer_counts.check_family(torch, config, spec)
  peers = {"eager": timing.torch_peer(family, config, FLAGS.steps)} if FLAGS.torch else {}
  if FLAGS.torch_compile:
    peers["compiled"] = timing.torch_peer(family, config, FLAGS.steps, compile=True)
  rates = {"imgen": [], **{name: [] for name in peers}}
  for r in range(FLAGS.rounds):
    rates["imgen"].append(run(FLAGS.steps))
    for name, peer in peers.items():
      rates[name].append(peer())
    line = ", ".join(f"{k} {v[-1]:.2f}" for k, v in rates.items())
    print(f"{family} {size}x{size} round {r}: {line} steps/s", flush=True)
  median = {k: statistics.median(v) for k, v in rates.items()}
  row = (
    f"| {family} | {size}x{size} | {batch} | {per_call} | {median['imgen']:.2f} | {compile_s:.1f} |"
  )
  for name in ("eager", "compiled"):
    if name in median:
      row += f" {median[name]:.2f} | {median['imgen'] / median[name]:.2f} |"
    else:
      row += " - | - |"
  return row


def main(argv):
  runtime.configure_xla()
  del argv
  unknown = set(FLAGS.families) - set(FAMILIES)
  if unknown:
    raise app.UsageError(f"--families: {sorted(unknown)} have no peer here; use {FAMILIES}.")
  rows = [measure(f, int(s)) for f in FLAGS.families for s in FLAGS.sizes]
  print(
    f"\nJAX {jax.__version__}, {jax.device_count()} {jax.default_backend()} device(s)\n"
    "| family | resolution | batch | steps per call | imgen steps/s | compile s "
    "| PyTorch eager steps/s | imgen/eager | PyTorch compiled steps/s | imgen/compiled |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
  )
  print("\n".join(rows))


if __name__ == "__main__":
  app.run(main)
