"""State and helpers shared by the per-replica train steps of every family."""

from collections.abc import Callable, Sequence
from typing import Any

import flax
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from imgen.errors import ConfigError

AXIS = "batch"  # The pmap axis name over devices; BatchNorm syncs over it.


@flax.struct.dataclass
class Network:
  """One network's trainable state."""

  params: Any
  batch_stats: Any
  opt_state: optax.OptState

  def variables(self, params=None):
    return {"params": self.params if params is None else params, "batch_stats": self.batch_stats}


@flax.struct.dataclass
class State:
  """The train state of a one-network family (VAE, CNN)."""

  step: jax.Array
  net: Network


def init_network(module, key: jax.Array, example: jax.Array, tx) -> Network:
  """Initialises `module` on `example` (jitted) with its optimizer state."""
  variables = jax.jit(lambda k, x: module.init(k, x, train=False))(key, example)
  params = variables["params"]
  return Network(params, variables.get("batch_stats", {}), tx.init(params))


DTYPES = ("float32", "bfloat16", "float16")


def compute_dtype(name: str) -> jnp.dtype:
  """config.model.dtype -> the dtype activations are computed in (parameters,
  optimizer state and losses stay float32)."""
  if name not in DTYPES:
    raise ConfigError(f"model.dtype {name!r}; use one of {DTYPES}.")
  return jnp.dtype(name)


def adam(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return optax.adam(cfg.learning_rate, b1=cfg.b1, b2=cfg.b2)


def global_normal(key: jax.Array, local_batch: int, shape: Sequence[int]) -> jax.Array:
  """This replica's rows of one N(0, 1) draw for the whole global batch.

  Every replica draws the global batch from the same key and keeps its own
  slice, so a step's noise depends on (key, step) alone and a run on N
  devices computes what a run on one device computes with the same global
  batch. The draw is tiny next to the step.
  """
  return global_draw(jax.random.normal, key, local_batch, shape)


def global_draw(
  sample: Callable[[jax.Array, tuple], jax.Array],
  key: jax.Array,
  local_batch: int,
  shape: Sequence[int],
) -> jax.Array:
  """`global_normal` for any sampler `sample(key, shape)`."""
  replicas = lax.psum(1, AXIS)
  noise = sample(key, (replicas * local_batch, *shape))
  return lax.dynamic_slice_in_dim(noise, lax.axis_index(AXIS) * local_batch, local_batch)


def scan_steps(step_fn: Callable) -> Callable:
  """`step_fn(state, batch, key)` over a leading axis of batches, in one call.

  Runs `train.steps_per_dispatch` steps per device call: the same steps in the
  same order, with metrics stacked along the scanned axis. On CPU the loop is
  unrolled: inside a loop XLA's CPU backend leaves the weight gradients of
  convolutions in a generic form ~20x slower than its convolution kernel
  (measured: CNN 0.5 vs 11 steps/s), and dispatch costs little there anyway.
  """
  unroll = jax.default_backend() == "cpu"

  def steps(state, batches, key):
    body = lambda state, batch: step_fn(state, batch, key)
    return lax.scan(body, state, batches, unroll=unroll)

  return steps


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
  """Replica 0 of every leaf."""
  return jax.tree.map(lambda x: x[0], tree)
