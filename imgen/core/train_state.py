"""The train state of one network, and of a family that trains one network.

`TrainState.apply_gradients(grads=...)` is the one place where an update is
applied: the optimizer's step, then the EMA of the parameters when it is on.
Families average their gradients over the devices first
(`parallel.value_and_mean_grad`), so every replica applies the same update.
"""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from imgen.core.optim import Optimizer

PyTree = Any


def _init_compiler_options() -> dict | None:
  """Initialisation runs once, so only its compile time counts: on CPU, LLVM at
  -O1 instead of XLA's default -O2 compiles a U-Net's initialisation in about
  half the time (threefry key derivations for every parameter are most of the
  program), and gave bitwise the same parameters for every family's default
  and smoke config (tests/test_train.py checks it on the GAN and the diffusion U-Net)."""
  return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None


@flax.struct.dataclass
class TrainState:
  """Parameters, BatchNorm statistics, optimizer state and (when on) the
  parameters' EMA of one network. `step` counts the updates applied to it."""

  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: optax.OptState
  ema_params: PyTree  # {} when the optimizer keeps no EMA.
  optimizer: Optimizer = flax.struct.field(pytree_node=False)

  @classmethod
  def create(
    cls, module: nn.Module, key: jax.Array, example: jax.Array | tuple, optimizer: Optimizer
  ) -> "TrainState":
    """Initialises `module` (called as `module(*inputs, train=False)`) on
    `example` (an input, or a tuple of inputs), jitted."""
    inputs = example if isinstance(example, tuple) else (example,)
    init = lambda k, xs: module.init(k, *xs, train=False)
    # Under a trace (jax.eval_shape of init_state, a jitted caller) it is inlined.
    options = None if isinstance(key, jax.core.Tracer) else _init_compiler_options()
    variables = jax.jit(init, compiler_options=options)(key, inputs)
    params = variables["params"]
    return cls(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=optimizer.tx.init(params),
      ema_params=params if optimizer.uses_ema else {},
      optimizer=optimizer,
    )

  def apply_gradients(self, *, grads: PyTree, **changes) -> "TrainState":
    """The state after one update with `grads` (averaged over the devices);
    `changes` replace other fields, such as new `batch_stats`."""
    updates, opt_state = self.optimizer.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    ema = self.ema_params
    if self.optimizer.uses_ema:
      decay = jnp.where(self.step < self.optimizer.ema_start, 0.0, self.optimizer.ema_decay)
      ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
    return self.replace(
      step=self.step + 1, params=params, opt_state=opt_state, ema_params=ema, **changes
    )

  @property
  def learning_rate(self) -> jax.Array:
    """The rate of the next update."""
    return jnp.asarray(self.optimizer.learning_rate(self.step), jnp.float32)

  @property
  def eval_params(self) -> PyTree:
    """What sampling and evaluation use: the EMA when it is on, else the parameters."""
    return self.ema_params if self.optimizer.uses_ema else self.params

  def variables(self, params: PyTree | None = None) -> dict[str, PyTree]:
    """Flax variables with `params` (default: `eval_params`) and the BatchNorm statistics."""
    return {
      "params": self.eval_params if params is None else params,
      "batch_stats": self.batch_stats,
    }

  def update_metrics(self, grads: PyTree, prefix: str = "") -> dict[str, jax.Array]:
    """Gradient norm and the learning rate this state's next update uses."""
    return {
      f"{prefix}grad_norm": optax.tree.norm(grads),
      f"{prefix}learning_rate": self.learning_rate,
    }


@flax.struct.dataclass
class SingleNetworkState:
  """The state of a family that trains one network (VAE, CNN). `step`
  counts train steps, including any whose update was not applied."""

  step: jax.Array
  net: TrainState

  @classmethod
  def create(cls, net: TrainState) -> "SingleNetworkState":
    return cls(jnp.zeros((), jnp.int32), net)
