"""One run as 1 process of 4 devices and as 2 processes of 2 (gloo over localhost).

  python benchmarks/multiprocess.py                      # gan, vae, cnn defaults, 2 rounds
  python benchmarks/multiprocess.py --families=gan --steps=300 --rounds=3

Each layout trains the family's default config (`configs/<family>.py`) for
`steps` steps through `main.py` (the 2-process layout through
`python -m imgen.core.launch`), evaluations and grids off; the rate is the
TensorBoard `steps_per_sec` of the last logging interval (`steps / 2` steps,
after compiling). The layouts alternate, round by round, on the same machine.
Fake CPU devices share its cores: the ratio is the cost of crossing processes
(gloo all-reduces, two Python hosts) at equal device count, not a speed-up.
"""

import datetime
import os
import platform
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)
from helpers import tensorboard_scalars  # noqa: E402

flags.DEFINE_list("families", ["gan", "vae", "cnn"], "Families to measure.")
flags.DEFINE_integer("steps", 200, "Train steps per run (even).")
flags.DEFINE_integer("rounds", 2, "Runs of each layout.")
FLAGS = flags.FLAGS

LAYOUTS = {"1 process x 4 devices": 1, "2 processes x 2 devices": 2}


def _run(family: str, processes: int, workdir: str) -> float:
  args = [
    f"--config=configs/{family}.py",
    f"--workdir={workdir}",
    f"--config.train.num_steps={FLAGS.steps}",
    f"--config.train.log_every={FLAGS.steps // 2}",
    f"--config.train.checkpoint_every={FLAGS.steps}",
    f"--config.eval.every_steps={10 * FLAGS.steps}",
    f"--config.eval.sample_every={10 * FLAGS.steps}",
  ]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  if processes == 1:
    cmd = [sys.executable, "main.py", *args]
    env["JAX_NUM_CPU_DEVICES"] = "4"
  else:
    cmd = [sys.executable, "-m", "imgen.core.launch", f"--processes={processes}", "--cpu_devices=2"]
    cmd += ["--", *args]
  result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
  if result.returncode:
    log = os.path.join(tempfile.gettempdir(), f"imgen-multiprocess-{family}-{processes}.log")
    with open(log, "w") as f:
      f.write(result.stderr)
    causes = [
      line for line in result.stderr.splitlines() if "Fatal" in line or "Check fail" in line
    ]
    raise RuntimeError(f"{' '.join(cmd)} failed ({causes[:3]}); its log: {log}")
  return tensorboard_scalars(workdir)["steps_per_sec"][FLAGS.steps]


def main(argv):
  del argv
  print(
    f"# {datetime.date.today()}, {platform.processor() or platform.machine()}, "
    f"{os.cpu_count()} cores; {FLAGS.steps} steps, rate of the last {FLAGS.steps // 2}"
  )
  print("| family | " + " | ".join(f"{k} (steps/s)" for k in LAYOUTS) + " | ratio |")
  print("|---|---|---|---|")
  for family in FLAGS.families:
    rates = {k: [] for k in LAYOUTS}
    with tempfile.TemporaryDirectory() as tmp:
      for r in range(FLAGS.rounds):
        for name, processes in LAYOUTS.items():
          workdir = os.path.join(tmp, f"{processes}-{r}")
          rates[name].append(_run(family, processes, workdir))
    medians = [float(np.median(v)) for v in rates.values()]
    cells = " | ".join(
      f"{m:.2f} ({', '.join(f'{x:.2f}' for x in v)})"
      for m, v in zip(medians, rates.values(), strict=True)
    )
    print(f"| {family} | {cells} | {medians[1] / medians[0]:.2f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
