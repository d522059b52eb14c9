"""The device axis: pmap, replication, and random draws that do not depend on
the number of devices.

Every per-replica function in imgen (train, eval and sampling steps) runs under
`jax.pmap` with the axis name `AXIS`; gradients, metrics and BatchNorm
statistics are averaged over it.
"""

from collections.abc import Callable, Sequence

import jax
from jax import lax
from jax.experimental import multihost_utils
import numpy as np

AXIS = "batch"  # The pmap axis name over devices; BatchNorm syncs over it.


def pmap(fn: Callable, **kwargs) -> Callable:
  """`jax.pmap(fn, **kwargs)`; on several CPU devices, each call also waits
  for its results.

  XLA's CPU devices share one machine's threads: a call dispatched while the
  previous one still runs on another device can leave the devices in
  different all-reduces for good. Seen 2026-12-02 (JAX 0.10.2, 2 cores) with
  the DCGAN of configs/gan.py: on 2 processes of 2 devices (gloo), 3 runs of 6
  stalled after the first step, every thread waiting in gloo or on XLA's
  execution semaphore; on 1 process of 4 devices, 2 runs of 3 aborted
  on XLA's 40 s rendezvous timeout, 3 of 4 devices in the all-reduce. With one
  call at a time, 8 of 8 two-process runs finished.
  """
  mapped = jax.pmap(fn, **kwargs)
  if jax.device_count() == 1 or jax.default_backend() != "cpu":
    return mapped

  def one_at_a_time(*args):
    return jax.block_until_ready(mapped(*args))

  return one_at_a_time


def pmap_step(step: Callable, *, donate: bool) -> Callable:
  """`step(state, batch, key)` pmapped over the local devices: state and batch
  split on their leading axis, the key shared; `donate` reuses the state's buffers."""
  return pmap(step, axis_name=AXIS, in_axes=(0, 0, None), donate_argnums=(0,) if donate else ())


def device_mean(tree):
  """`lax.pmean(tree, AXIS)`, left out when the axis has one device.

  The mean over one device is the tree itself, but XLA's CPU backend still
  runs the all-reduce: 9 of the 28x28 VAE step's ~55 ms (2026-12-02).
  """
  return tree if lax.axis_size(AXIS) == 1 else lax.pmean(tree, AXIS)


def value_and_mean_grad(loss_fn: Callable) -> Callable:
  """`jax.value_and_grad(loss_fn, has_aux=True)` whose gradients are averaged
  over the devices: each replica gets the gradient of the global batch."""
  value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

  def wrapped(params):
    value, grads = value_and_grad(params)
    return value, device_mean(grads)

  return wrapped


def global_draw(
  sample: Callable[[jax.Array, tuple], jax.Array],
  key: jax.Array,
  local_batch: int,
  shape: Sequence[int],
  axis_name: str = AXIS,
) -> jax.Array:
  """This replica's rows of one draw `sample(key, shape)` for the whole global batch.

  Every replica draws the global batch from the same key and keeps its own
  slice, so a step's randomness depends on (key, step) alone and a run on N
  devices computes what a run on one device computes with the same global
  batch. The draws are tiny next to the step.
  """
  replicas = lax.psum(1, axis_name)
  noise = sample(key, (replicas * local_batch, *shape))
  return lax.dynamic_slice_in_dim(noise, lax.axis_index(axis_name) * local_batch, local_batch)


def global_normal(key: jax.Array, local_batch: int, shape: Sequence[int]) -> jax.Array:
  """`global_draw` of N(0, 1) noise."""
  return global_draw(jax.random.normal, key, local_batch, shape)


def device_sharding() -> jax.sharding.NamedSharding:
  """Leading axis split over the local devices, as pmap lays out its outputs.

  Inputs laid out the same way as the step's outputs keep pmap from compiling
  the step a second time on its second call.
  """
  mesh = jax.sharding.Mesh(np.array(jax.local_devices()), (AXIS,))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))


def replicate(tree):
  """One copy of every leaf per local device, stacked on a leading axis."""
  n, sharding = jax.local_device_count(), device_sharding()
  return jax.tree.map(lambda x: jax.device_put(np.stack([np.asarray(x)] * n), sharding), tree)


def unreplicate(tree):
  """Replica 0 of every leaf: device 0's shard, read without a computation.

  `x[0]` of an array sharded over several devices would run a small program on
  all of them for each leaf, and XLA's CPU backend can interleave such
  programs differently on different devices, so their collectives deadlock
  (seen with 4 CPU devices and a state of many leaves).
  """

  def first(x):
    if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
      return x.addressable_data(0).reshape(x.shape[1:])
    return x[0]

  return jax.tree.map(first, tree)


def shard_rows(x: np.ndarray) -> np.ndarray:
  """(n, ...) rows of this process -> (local devices, n / devices, ...)."""
  return x.reshape((jax.local_device_count(), -1) + x.shape[1:])


def gather(x: np.ndarray) -> np.ndarray:
  """Rows of every process, in process order (a no-op on one host): of one
  global batch, whose process p holds the p-th chunk, the whole batch in order."""
  if jax.process_count() == 1:
    return x
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def every_process(flag: bool) -> bool:
  """Whether `flag` holds on every process (collective: all must ask)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.all(multihost_utils.process_allgather(np.int32(flag))))
