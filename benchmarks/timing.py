"""Timing of a family's pmapped train step, shared by the step benchmarks."""

import time

import jax
import numpy as np

from imgen import parallel


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


def step_runner(family, images: np.ndarray, **fields: np.ndarray):
  """(run(num_steps) -> steps/s, compile seconds) of the family's pmapped train
  step on one fixed batch of `images` and any other `fields` (laid out per device)."""
  train_step = parallel.pmap_step(family.make_train_step(), donate=True)
  state = parallel.replicate(family.init_state(jax.random.key(0)))
  batch = jax.device_put({"image": images, **fields}, parallel.device_sharding())
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
    return num_steps / (time.perf_counter() - t)

  return run, compile_s
