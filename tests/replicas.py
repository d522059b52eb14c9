"""Two train steps of a family on 4 replicas and on 1, in one process of 4 CPU
devices: `python tests/replicas.py OUT.npz FAMILY DATA_DIR [group.field=value ...]`.

The steps are the trainer's own (the guarded step, buffers donated), fed the
same global batches and keys; the 1-replica program is the one the family's
smoke run compiled (read from the shared compilation cache). Writes the
states' leaves (`one/<path>`, `four/<path>`) and the first step's metrics to
OUT.npz for `tests/test_train.py` to compare.
"""

import os
import sys

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

from helpers import override  # noqa: E402
from helpers import smoke_config  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from imgen import guards  # noqa: E402
from imgen import parallel  # noqa: E402
from imgen import runtime  # noqa: E402
from imgen.experiment import Experiment  # noqa: E402

STEPS = 2


def _on_devices(batch, devices: int, grouped: bool):
  """A batch laid out for 4 devices, (4, [k,] b, ...) -> (devices, [k,] 4b / devices, ...)."""

  def relayout(x):
    if grouped:  # (4, k, b, ...) -> (k, 4b, ...) -> (devices, k, 4b / devices, ...).
      x = np.swapaxes(x, 0, 1).reshape(x.shape[1], -1, *x.shape[3:])
      return np.swapaxes(x.reshape(x.shape[0], devices, -1, *x.shape[2:]), 0, 1)
    return x.reshape(devices, -1, *x.shape[2:])

  return jax.tree.map(relayout, batch)


def run(family: str, data_dir: str, overrides: list[str]) -> dict[str, np.ndarray]:
  assert jax.local_device_count() == 4, jax.devices()
  config = smoke_config(family, data_dir)
  for flag in overrides:
    override(config, flag)
  experiment = Experiment.create(config)
  family_ = experiment.family
  grouped = family_.batches_per_step > 1
  step = guards.guard_nonfinite(family_.make_train_step())
  initial = family_.init_state(experiment.keys.init)
  batches = experiment.train_batches(0)
  batches = [next(batches) for _ in range(STEPS)]
  out = {}
  for name, devices in (("four", 4), ("one", 1)):
    call = parallel.pmap(
      step,
      axis_name=parallel.AXIS,
      in_axes=(0, 0, None),
      donate_argnums=(0,),
      devices=jax.local_devices()[:devices],
    )
    state = jax.tree.map(lambda x, n=devices: np.stack([np.asarray(x)] * n), initial)
    for i, batch in enumerate(batches):
      state, metrics = call(state, _on_devices(batch, devices, grouped), experiment.keys.step)
      if i == 0:
        for key, value in jax.device_get(metrics).items():
          out[f"{name}_metrics/{key}"] = np.asarray(value)[0]
    for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(state)):
      out[f"{name}/{jax.tree_util.keystr(path)}"] = np.asarray(leaf)[0]
  return out


if __name__ == "__main__":
  runtime.configure_xla()  # Before the backend starts; the cache folder comes from the environment.
  out_path, family_name, data_folder, *rest = sys.argv[1:]
  np.savez(out_path, **run(family_name, data_folder, rest))
