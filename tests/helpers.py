"""What several test files share: the families' configs, a run's final state,
and the `main.py` command a user would type."""

import os
import sys

import jax

from configs import cnn as cnn_config
from configs import gan as gan_config
from configs import vae as vae_config
from imgen import checkpoints
from imgen import data
from imgen import families

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"gan": gan_config, "vae": vae_config, "cnn": cnn_config}


def final_state(config, workdir):
  """(state, step) of the newest intact checkpoint in `workdir`."""
  builder = data.get_builder(config.data.name, config.data.data_dir)
  spec = data.image_spec(builder, config.data.image_key, config.model.image_size)
  target = families.create(config, spec).init_state(jax.random.key(0))
  manager = checkpoints.make_manager(workdir, keep=1, create=False)
  state, step = checkpoints.restore_latest(manager, target)
  manager.close()
  return state, step


def main_command(family, workdir, data_dir, *overrides) -> list[str]:
  """`python main.py` on the family's smoke config (run it with cwd=ROOT)."""
  return [
    sys.executable,
    "main.py",
    f"--config=configs/{family}.py:smoke",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    *overrides,
  ]
