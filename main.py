"""imgen: train image-generation models from a config file.

python main.py --config=configs/gan.py [--workdir=runs/x] [--config.train.num_steps=200]
python main.py --config=configs/gan.py --workdir=runs/x --mode=eval     # metrics of a checkpoint
python main.py --config=configs/gan.py --workdir=runs/x --mode=sample   # PNG grids and .npz
python main.py --config=configs/diffusion.py --workdir=runs/x --mode=inpaint  # scored completions
python main.py --config=configs/segment.py --workdir=runs/x --mode=segment    # masks and overlays
python main.py --config=configs/texture.py --workdir=runs/x --mode=texture    # textures, scored
python main.py --config=configs/compose.py --workdir=runs/x --mode=compose    # composed scenes
python -m imgen.core.launch --processes=2 -- --config=configs/gan.py   # 2 local processes, one run
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from imgen import modes
from imgen.core import distributed
from imgen.core import runtime
from imgen.core import writers
from imgen.core.errors import UserError

config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run folder; default: a new one under runs/.")
flags.DEFINE_enum(
  "mode",
  "train",
  list(modes.MODES),
  "; ".join(f"{name}: {mode.help}" for name, mode in modes.MODES.items()),
)
flags.DEFINE_enum(
  "distributed",
  "auto",
  list(distributed.MODES),
  "Several processes: 'auto' joins them when the flags below, IMGEN_* variables or a cluster "
  "(SLURM, Open MPI, TPU) say so; 'on' always asks JAX to find them; 'off' never.",
)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (several processes).")
flags.DEFINE_integer("num_processes", None, "How many processes form the run.")
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with config mistakes reported in one line, no traceback."""
  try:
    rest = FLAGS(argv)
  except flags.Error as e:
    message = str(e)
    if "Traceback" in message:  # A config file that raised: keep what it said, not where.
      lines = [line for line in message.splitlines() if line.strip()]
      message = f"{lines[0].strip()} {lines[-1].strip()}"
    _fail(f"{message}\nPass --helpfull to see the flags.")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    while e.args and isinstance(e.args[0], Exception):  # ml_collections wraps its KeyError.
      e = e.args[0]
    message = " ".join(str(a) for a in e.args).replace("\n", " ")
    _fail(f"bad config override ({type(e).__name__}): {message}")
  try:  # A config file that failed to load only raises when it is first read.
    FLAGS.config.get("family")
  except OSError as e:
    reason = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
    _fail(f"cannot load --config={FLAGS['config'].config_filename}: {reason}")
  return rest


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.configure_xla()  # Before the first use of a backend.
  writers.quiet_library_logs(os.path.abspath(__file__))
  try:
    distributed.initialize(
      distributed.resolve(
        FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
      )
    )
  except UserError as e:
    _fail(str(e))
  try:
    modes.check_mode(FLAGS.mode, FLAGS.config, FLAGS["config"].config_filename)
    workdir = modes.choose_workdir(FLAGS.mode, FLAGS.workdir, FLAGS["config"].config_filename)
  except UserError as e:
    _fail(str(e))
  logging.info(
    "JAX %s, process %d/%d, devices: %s",
    jax.__version__,
    jax.process_index(),
    jax.process_count(),
    jax.devices(),
  )
  logging.info("Config:\n%s", FLAGS.config)
  try:
    modes.run(FLAGS.mode, FLAGS.config, workdir, FLAGS["config"].config_filename)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
