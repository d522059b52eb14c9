"""Train steps of a family's smoke config on several replicas, fed the same
global batches and keys as on one: what the 4-vs-1 replica tests compare.

`python tests/replicas.py` (JAX_NUM_CPU_DEVICES=4) serves requests, one JSON
line each on its standard input, `[OUT.npz, INITIAL.npz, FAMILY, DATA_DIR,
[group.field=value, ...]]`: it runs them on the 4 CPU devices of its process,
from the initial state's leaves in INITIAL.npz, writes the state's leaves and
the first step's metrics to OUT.npz and answers one JSON line, `"ok"` or the
error. One such process serves a test worker's whole session (tests/helpers.py
starts it), so each request costs its steps, not a start of Python and JAX.
The test runs the same steps on its own single device, whose programs the
family's smoke run has already compiled. The steps are the trainer's: the
guarded step, buffers donated.
"""

import json
import os
import sys
import traceback

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

from helpers import override  # noqa: E402
from helpers import smoke_config  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from imgen.core import guards  # noqa: E402
from imgen.core import parallel  # noqa: E402
from imgen.core import runtime  # noqa: E402
from imgen.evaluation.experiment import Experiment  # noqa: E402

STEPS = 2


def _on_devices(batch, devices: int, grouped: bool):
  """A batch as the pipeline lays it out for this process's L devices,
  (L, [k,] b, ...), -> (devices, [k,] L * b / devices, ...)."""

  def relayout(x):
    if grouped:  # (L, k, b, ...) -> (k, L * b, ...) -> (devices, k, L * b / devices, ...).
      x = np.swapaxes(x, 0, 1).reshape(x.shape[1], -1, *x.shape[3:])
      return np.swapaxes(x.reshape(x.shape[0], devices, -1, *x.shape[2:]), 0, 1)
    return x.reshape(devices, -1, *x.shape[2:])

  return jax.tree.map(relayout, batch)


def train_steps(
  family: str, data_dir: str, overrides: list[str], devices: int, initial: list | None = None
) -> tuple[dict, list]:
  """{'<path>': leaf of the state, 'metrics/<name>': first step's value} after
  `STEPS` train steps on the first `devices` local devices, from the leaves of
  the initial state `initial` (default: the family's own `init_state`), and
  the initial state's leaves."""
  config = smoke_config(family, data_dir)
  for flag in overrides:
    override(config, flag)
  experiment = Experiment.create(config)
  family_ = experiment.family
  step = guards.guard_nonfinite(family_.make_train_step())
  call = parallel.pmap(
    step,
    axis_name=parallel.AXIS,
    in_axes=(0, 0, None),
    donate_argnums=(0,),
    devices=jax.local_devices()[:devices],
  )
  if initial is None:
    start = jax.device_get(family_.init_state(experiment.keys.init))
  else:  # Given: no initialisation compiled here (in a process of 4 devices, nothing is cached).
    shapes = jax.eval_shape(family_.init_state, experiment.keys.init)
    start = jax.tree.unflatten(jax.tree.structure(shapes), initial)
  # Laid out as the step's outputs are, so the second step does not compile the step again.
  assert devices == jax.local_device_count(), (devices, jax.devices())
  state = parallel.replicate(start)
  batches = experiment.train_batches(0)
  out = {}
  for i in range(STEPS):
    batch = _on_devices(next(batches), devices, family_.batches_per_step > 1)
    state, metrics = call(state, batch, experiment.keys.step)
    if i == 0:
      out.update({f"metrics/{k}": np.asarray(v)[0] for k, v in jax.device_get(metrics).items()})
  for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(state)):
    out[jax.tree_util.keystr(path)] = np.asarray(leaf)[0]
  return out, [np.asarray(x) for x in jax.tree.leaves(start)]


if __name__ == "__main__":
  runtime.configure_xla()  # Before the backend starts; the cache folder comes from the environment.
  from conftest import _skip_eviction_scans  # noqa: E402 (the test session's cache settings)

  _skip_eviction_scans()
  assert jax.local_device_count() == 4, jax.devices()
  for line in sys.stdin:
    out_path, initial_path, family_name, data_folder, flags = json.loads(line)
    try:
      with np.load(initial_path) as f:
        leaves = [f[f"leaf_{i}"] for i in range(len(f.files))]
      np.savez(out_path, **train_steps(family_name, data_folder, flags, 4, leaves)[0])
      answer = "ok"
    except Exception:  # pylint: disable=broad-except  # The test reports it; serve the next.
      answer = traceback.format_exc()
    print(json.dumps(answer), flush=True)
