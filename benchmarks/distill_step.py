"""Throughput of distillation (configs/distill.py): the consistency-distillation train step
side by side with its PyTorch peer (benchmarks/torch_distill.py), and images/s of the
student at 1, 2 and 4 network evaluations beside its teacher's default sampler and the
DCGAN's generator (configs/gan.py).

  python benchmarks/distill_step.py --torch --rounds=3
  python benchmarks/distill_step.py --rounds=0 --sampling=1,2,4 --teacher --dcgan
  python benchmarks/distill_step.py --variant=progressive --rounds=1   # imgen's step only

The speed of a step or a sampler does not depend on the weights, so by default the teacher
is an untrained U-Net of the config's shape written to a temporary run folder;
`--teacher_workdir` names a trained one instead. The train step is timed as the trainer runs
it (the non-finite guard, `train.steps_per_dispatch` steps a call); imgen's and PyTorch's
alternate `rounds` times in one process and the ratio of their medians is printed. Sampling
is one call of `--sample_batch` images, compile excluded. Prints markdown rows.
"""

import os
import statistics
import sys
import tempfile

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import timing  # noqa: E402
from benchmarks import torch_distill  # noqa: E402
from benchmarks import torch_unet  # noqa: E402
from configs import diffusion as diffusion_config  # noqa: E402
from configs import diffusion_conditional  # noqa: E402
from configs import distill as distill_config  # noqa: E402
from configs import gan as gan_config  # noqa: E402
from imgen.core import checkpoints  # noqa: E402
from imgen.core import files  # noqa: E402
from imgen.core import runtime  # noqa: E402
from imgen.data import DataSpec  # noqa: E402
from imgen.families import DiffusionFamily  # noqa: E402
from imgen.families import DistillFamily  # noqa: E402
from imgen.families import GANFamily  # noqa: E402
from imgen.methods import samplers  # noqa: E402

flags.DEFINE_string("variant", "", "configs/distill.py's variant ('', 'progressive', ...).")
flags.DEFINE_string("teacher_workdir", None, "A trained teacher (default: an untrained one).")
flags.DEFINE_integer("batch_size", None, "Global train batch (default: the config's).")
flags.DEFINE_integer("steps", 20, "Timed train steps per round (rounded up to whole calls).")
flags.DEFINE_integer("rounds", 1, "Alternating imgen/PyTorch rounds of the train step (0: none).")
flags.DEFINE_bool("torch", False, "Also time the PyTorch peer of the consistency step.")
flags.DEFINE_list("sampling", [], "Student network evaluations to time sampling for, e.g. 1,2,4.")
flags.DEFINE_bool("teacher", False, "Also time the teacher's default sampler.")
flags.DEFINE_bool("dcgan", False, "Also time configs/gan.py's generator.")
flags.DEFINE_integer("sample_batch", 500, "Images per sampling call.")
FLAGS = flags.FLAGS


def untrained_teacher(variant: str, spec: DataSpec, workdir: str) -> None:
  """A diffusion run in `workdir` of the variant's teacher config (configs/diffusion.py or
  configs/diffusion_conditional.py) at its initialisation: what the distill family reads."""
  conditional = "conditional" in variant.split("_")
  teacher = (diffusion_conditional if conditional else diffusion_config).get_config(
    "smoke" if "smoke" in variant.split("_") else None
  )
  state = DiffusionFamily(teacher, spec).init_state(jax.random.key(0))
  manager = checkpoints.make_manager(workdir, keep=1)
  checkpoints.save(manager, 0, state)
  manager.wait_until_finished()
  manager.close()
  (files.path(workdir) / "config.json").write_text(teacher.to_json_best_effort())


def _student(config, spec, steps: int):
  config = config.copy_and_resolve_references()
  config.sample.steps = int(steps)
  return DistillFamily(config, spec), config


def main(argv):
  del argv
  runtime.configure_xla()
  config = distill_config.get_config(FLAGS.variant or None)
  if FLAGS.batch_size:
    config.train.batch_size = FLAGS.batch_size
  m = config.model
  spec = DataSpec.of_images(m.image_size, 1)
  folder = tempfile.TemporaryDirectory(prefix="imgen-teacher-")
  if FLAGS.teacher_workdir:
    config.distill.teacher_workdir = FLAGS.teacher_workdir
  else:
    untrained_teacher(FLAGS.variant, spec, folder.name)
    config.distill.teacher_workdir = folder.name
  family = DistillFamily(config, spec)
  name = f"{config.distill.method} distillation, U-Net {m.image_size}x{m.image_size} ch{m.channels}"
  print(f"JAX {jax.__version__} on {jax.devices()}; {name}")
  if FLAGS.rounds:
    n, batch = jax.local_device_count(), config.train.batch_size
    shape = (n, batch // n, m.image_size, m.image_size, 1)
    images = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    per_call = config.train.steps_per_dispatch
    run_jax, compile_s = timing.trainer_step_runner(family, images, per_call)
    print(f"{per_call} steps per call; first call (compile) {compile_s:.1f}s", flush=True)
    jax_rates, torch_rates = [], []
    for r in range(FLAGS.rounds):
      jax_rates.append(run_jax(FLAGS.steps))
      print(f"round {r}: imgen {jax_rates[-1]:.3f} steps/s", flush=True)
      if FLAGS.torch:
        d = config.distill
        torch_rates.append(
          torch_distill.consistency_steps_per_second(
            batch,
            m.image_size,
            1,
            *torch_unet.layout(m),
            steps=FLAGS.steps,
            levels=d.levels,
            substeps=d.teacher_substeps,
            sigma_min=config.diffusion.sigma_min,
            sigma_max=config.diffusion.sigma_max,
            rho=d.rho,
            sigma_data=d.sigma_data,
            mu=d.mu,
            ema_decay=config.optim.ema_decay,
          )
        )
        print(f"round {r}: PyTorch {torch_rates[-1]:.3f} steps/s", flush=True)
    rate = statistics.median(jax_rates)
    row = f"| {name} | {batch} | {', '.join(f'{x:.3f}' for x in jax_rates)} |"
    if torch_rates:
      peer = statistics.median(torch_rates)
      row += f" {', '.join(f'{x:.3f}' for x in torch_rates)} | {rate / peer:.2f} |"
    print("| step | batch | imgen steps/s (rounds) | PyTorch steps/s (rounds) | imgen/PyTorch |")
    print(row)
  rows = []
  batch = FLAGS.sample_batch

  def time_sampler(label, evaluations, family, family_config):
    rate, compile_s = timing.sampling_rate(family, family_config.family, batch)
    rows.append(f"| {label} | {evaluations} | {batch} | {rate:.1f} | {compile_s:.1f} |")
    print(rows[-1], flush=True)

  for steps in FLAGS.sampling:
    time_sampler(f"student, {config.sample.sampler} sampler", steps, *_student(config, spec, steps))
  if FLAGS.teacher:
    saved = files.run_config(config.distill.teacher_workdir, "teacher_workdir", "", "diffusion")
    teacher = ml_collections.ConfigDict(saved)
    s = teacher.sample
    evaluations = samplers.evaluations(s.sampler, s.steps)
    time_sampler(
      f"teacher, {s.sampler} sampler", evaluations, DiffusionFamily(teacher, spec), teacher
    )
  if FLAGS.dcgan:
    gan = gan_config.get_config()
    time_sampler("DCGAN generator (configs/gan.py)", 1, GANFamily(gan, spec), gan)
  if rows:
    print("| generator | network evaluations | batch | images/s | compile s |")
    print("\n".join(rows))
  folder.cleanup()


if __name__ == "__main__":
  app.run(main)
