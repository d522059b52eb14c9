"""Timing of a family's pmapped train step, shared by the step benchmarks."""

import time

import jax
import numpy as np

from imgen.core import guards
from imgen.core import parallel
from imgen.evaluation import evaluate
from imgen.modes import train


def import_torch(peer: str):
  """PyTorch, for the peer benchmarks only (a benchmark extra, imported lazily)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
      f"PyTorch is needed for the {peer} peer benchmark: pip install torch "
      "--index-url https://download.pytorch.org/whl/cpu"
    ) from e
  return torch


def steps_per_second(step, steps: int) -> float:
  """Calls of `step()` per second over `steps` calls, after one untimed warm-up call
  (for the PyTorch peers, whose calls return when their work is done)."""
  step()
  t = time.perf_counter()
  for _ in range(steps):
    step()
  return steps / (time.perf_counter() - t)


def step_runner(
  family, images: np.ndarray, *, guard: bool = False, steps_per_call: int = 1, **fields: np.ndarray
):
  """(run(num_calls) -> steps/s, compile seconds) of the family's pmapped train
  step on one fixed batch of `images` and any other `fields` (laid out per device).

  `guard` wraps the step in the trainer's non-finite guard; with
  `steps_per_call` > 1 each call is the trainer's scanned call of that many
  steps (`train.steps_per_dispatch`), on the same batch each step. Both
  together time the step as `train.py` runs it.
  """
  step = family.make_train_step()
  step = guards.guard_nonfinite(step) if guard else step
  batch = {"image": images, **fields}
  if steps_per_call > 1:
    step = train.scan_steps(step)
    batch = jax.tree.map(lambda x: np.stack([x] * steps_per_call, axis=1), batch)
  train_step = parallel.pmap_step(step, donate=True)
  state = parallel.replicate(family.init_state(jax.random.key(0)))
  batch = jax.device_put(batch, parallel.device_sharding())
  key = jax.random.key(1)

  t = time.perf_counter()
  state, metrics = train_step(state, batch, key)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t

  def run(num_steps: int) -> float:
    nonlocal state
    state, metrics = train_step(state, batch, key)  # Warm-up, untimed.
    jax.block_until_ready(metrics)
    t = time.perf_counter()
    for _ in range(num_steps):
      state, metrics = train_step(state, batch, key)
    jax.block_until_ready(metrics)
    return num_steps * steps_per_call / (time.perf_counter() - t)

  return run, compile_s


def sampling_rate(family, name: str, batch: int) -> tuple[float, float]:
  """(images/s, compile s) of one sampling call of `batch` images of the family `name`
  (`evaluate.make_sampler`), from its initial state: the second call is timed, the first's
  excess over it is the compile time."""
  state = parallel.replicate(family.init_state(jax.random.key(0)))
  sampler = evaluate.make_sampler(family, name, batch)
  t = time.perf_counter()
  jax.block_until_ready(next(sampler(state, jax.random.key(1), batch)))
  first = time.perf_counter() - t
  t = time.perf_counter()
  jax.block_until_ready(next(sampler(state, jax.random.key(2), batch)))
  elapsed = time.perf_counter() - t
  return batch / elapsed, first - elapsed


def trainer_step_runner(family, images: np.ndarray, steps_per_call: int, **fields: np.ndarray):
  """(run(steps) -> steps/s, compile seconds) of the family's step as `train.py`
  runs it (`step_runner` with the non-finite guard and `steps_per_call` steps a
  call); `run` times `steps` steps rounded up to whole calls."""
  run, compile_s = step_runner(family, images, guard=True, steps_per_call=steps_per_call, **fields)
  return lambda steps: run(-(-steps // steps_per_call)), compile_s


def trainer_call(experiment, steps_per_call: int = 1):
  """(call, state, batch): the trainer's own call of `steps_per_call` steps
  (`train._train_calls`: guarded, donated; compiled on first use), the
  replicated initial state, and one batch of the config's data on the devices,
  stacked for that many steps."""
  call = train._train_calls(experiment)[steps_per_call]
  (batch,) = train.stack_steps(experiment.train_batches(0), iter([steps_per_call]))
  batch = jax.device_put(batch, parallel.device_sharding())
  state = parallel.replicate(experiment.family.init_state(experiment.keys.init))
  return call, state, batch


def torch_peer(family: str, config, steps: int, channels: int = 1, compile: bool = False):
  """() -> steps/s of the PyTorch peer of `config`'s network and step (the GAN,
  VAE and CNN families: benchmarks/torch_dcgan.py, torch_vae.py, torch_cnn.py),
  on torch's default device, for `channels`-channel images."""
  from benchmarks import torch_cnn  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_dcgan  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_vae  # pylint: disable=g-import-not-at-top

  m, batch, size = config.model, config.train.batch_size, config.model.image_size
  if family == "gan":
    return lambda: torch_dcgan.torch_dcgan_steps_per_sec(
      batch,
      size,
      channels,
      steps=steps,
      warmup=1,
      g_width=m.g_width,
      d_width=m.d_width,
      compile=compile,
    )
  if family == "vae":
    return lambda: torch_vae.steps_per_second(
      batch, size, channels, m.latent_dim, m.width, steps=steps, compile=compile
    )
  return lambda: torch_cnn.steps_per_second(
    batch, size, channels, m.num_classes, m.width, m.dropout, steps=steps, compile=compile
  )


def program_costs(compiled) -> tuple[float, int | None]:
  """(FLOPs of one call, peak device bytes) of a compiled program, from XLA's
  cost and memory analyses: arguments + temporaries + outputs - donated (aliased)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float((cost or {}).get("flops", 0.0))
  memory = compiled.memory_analysis()
  if memory is None:
    return flops, None
  peak = (
    memory.argument_size_in_bytes
    + memory.temp_size_in_bytes
    + memory.output_size_in_bytes
    - memory.alias_size_in_bytes
  )
  return flops, peak
