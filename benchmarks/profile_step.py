"""Where a config's train step spends its time: a `jax.profiler` trace of a few
steps, the XLA operations' events summed by name, each named with its HLO
opcode and the JAX operation it came from (the HLO's metadata).

  python benchmarks/profile_step.py --config=diffusion
  python benchmarks/profile_step.py --config=segment --steps=20 --top=40

The step is the trainer's (guarded, donated, one step per call) on one fixed
batch of the config's data. XLA's CPU backend runs operations on several
threads at once, so the per-operation sums can add up to more than the wall
time; the table gives each one's share of the summed operation time.

On jaxlib 0.10's CPU backend most convolutions emit no event of their own (2
of the diffusion U-Net's 83 did, 2026-12-06), so their time is in no row: the
shares are of the named operations only, and the first line gives their sum
beside the step's wall time.
"""

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import timing  # noqa: E402
from configs import common  # noqa: E402
from imgen.core import runtime  # noqa: E402
from imgen.evaluation.experiment import Experiment  # noqa: E402

flags.DEFINE_string("config", "diffusion", "configs/<name>.py to profile (its default config).")
flags.DEFINE_string("arg", None, "The config's argument (e.g. 'smoke').")
flags.DEFINE_integer("steps", 10, "Traced steps (after two untraced ones).")
flags.DEFINE_integer("top", 30, "Rows of the table.")
FLAGS = flags.FLAGS

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = [^=]*?\b([a-z][\w\-]*)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def hlo_instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
  """{instruction name: (opcode, JAX op_name)} of a compiled module's HLO text."""
  out = {}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if match:
      op_name = _OP_NAME.search(line)
      out[match.group(1)] = (match.group(2), op_name.group(1) if op_name else "")
  return out


def op_times(trace_dir: str, names: dict) -> dict[str, float]:
  """Summed microseconds of the trace's events that are the module's instructions."""
  (path,) = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
  with gzip.open(path) as f:
    events = json.load(f)["traceEvents"]
  totals = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and event.get("name") in names:
      totals[event["name"]] += event.get("dur", 0.0)
  return totals


# What each operation computes, read from its JAX op path (first match wins).
CATEGORIES = (
  ("layout copies (transposes)", r"transpose_copy|/transpose$|copy_bitcast"),
  ("convolutions", r"conv_general_dilated|/Conv_\d+/|Conv4x4|ConvTranspose"),
  ("attention", r"[Aa]ttention|softmax"),
  ("GroupNorm", r"GroupNorm|LayerNorm"),
  ("SiLU", r"silu"),
  ("skip concatenations and splits", r"concatenate|/split"),
  ("upsampling", r"upsample|resize|broadcast_in_dim"),
  ("1x1 shortcuts and dense layers", r"shortcut|Dense|dot_general"),
  ("optimizer, EMA, loss, guard", r""),
)


def category(opcode: str, op_name: str) -> str:
  if opcode == "convolution":
    return "convolutions"
  inside = op_name.split("/", 1)[1] if "/" in op_name else op_name
  return next(name for name, pattern in CATEGORIES if re.search(pattern, inside))


def _short(op_name: str, width: int = 70) -> str:
  """The JAX op path without the jit/pmap wrappers, cut from the left to `width`."""
  path = re.sub(r"^(pmap|jit)\([^)]*\)/", "", op_name)
  return path if len(path) <= width else "..." + path[-width + 3 :]


def main(argv):
  del argv
  runtime.configure_xla()
  config = common.default_config(FLAGS.config, FLAGS.arg)
  experiment = Experiment.create(config)
  call, state, batch = timing.trainer_call(experiment)
  key = experiment.keys.step
  names = hlo_instructions(call.lower(state, batch, key).compile().as_text())
  for _ in range(2):
    state, metrics = call(state, batch, key)
  jax.block_until_ready(metrics)
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    t = time.perf_counter()
    for _ in range(FLAGS.steps):
      state, metrics = call(state, batch, key)
    jax.block_until_ready(metrics)
    wall = (time.perf_counter() - t) / FLAGS.steps
    jax.profiler.stop_trace()
    totals = op_times(trace_dir, names)
  summed = sum(totals.values())
  by_opcode, by_category = collections.Counter(), collections.Counter()
  for name, us in totals.items():
    by_opcode[names[name][0]] += us
    by_category[category(*names[name])] += us
  print(f"configs/{FLAGS.config}.py, batch {config.train.batch_size}: {1 / wall:.2f} steps/s, ")
  named = summed / FLAGS.steps / 1e3
  print(f"{wall * 1e3:.1f} ms per step; the named operations' events: {named:.1f} ms")
  print("\n| opcode | ms per step | share |\n|---|---|---|")
  for opcode, us in by_opcode.most_common():
    print(f"| {opcode} | {us / FLAGS.steps / 1e3:.2f} | {us / summed:.1%} |")
  print("\n| what | ms per step | share |\n|---|---|---|")
  for what, us in by_category.most_common():
    print(f"| {what} | {us / FLAGS.steps / 1e3:.2f} | {us / summed:.1%} |")
  print("\n| operation | opcode | ms per step | share | JAX op |\n|---|---|---|---|---|")
  for name, us in totals.most_common(FLAGS.top):
    opcode, op_name = names[name]
    share = us / summed
    print(f"| {name} | {opcode} | {us / FLAGS.steps / 1e3:.2f} | {share:.1%} | {_short(op_name)} |")


if __name__ == "__main__":
  app.run(main)
