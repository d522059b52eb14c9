"""Timing of a family's pmapped train step, shared by the step benchmarks."""

import time

import jax
import numpy as np

from imgen import parallel


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
