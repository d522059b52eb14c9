"""The optimizer factory and the train state, against hand computations."""

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from imgen.core import guards
from imgen.core.errors import ConfigError
from imgen.core.optim import make_optimizer
from imgen.core.train_state import SingleNetworkState
from imgen.core.train_state import TrainState


def _state(params, **group) -> TrainState:
  """A TrainState of bare `params` (no module) with the optimizer of `group`."""
  optimizer = make_optimizer(common.optimizer(**group), num_steps=100, path="optim")
  params = jax.tree.map(jnp.asarray, params)
  ema = params if optimizer.uses_ema else {}
  return TrainState(jnp.zeros((), jnp.int32), params, {}, optimizer.tx.init(params), ema, optimizer)


def _rate(k, lr, schedule, warmup=0, total=100, end=0.0):
  """The schedule's rate for update k, from its definition."""
  if k < warmup:
    return lr * k / warmup
  t = min(k - warmup, total - warmup) / (total - warmup)
  if schedule == "cosine":
    return lr * (end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t)))
  if schedule == "linear":
    return lr * (1 + (end - 1) * t)
  return lr


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
@pytest.mark.parametrize("warmup", [0, 10])
def test_the_logged_rate_is_the_applied_rate_and_follows_the_schedule(schedule, warmup):
  """Plain SGD moves w by -rate * g, so each update shows the rate it used."""
  g = jnp.array([2.0, -1.0])
  state = _state(
    {"w": np.zeros(2)},
    learning_rate=0.1,
    name="sgd",
    schedule=schedule,
    warmup_steps=warmup,
    end_scale=0.2,
    decay_steps=60,
  )
  for k in [0, 1, 5, 10, 11, 30, 59, 60, 80]:
    state = state.replace(step=jnp.asarray(k, jnp.int32))
    state = state.replace(
      opt_state=jax.tree.map(lambda c, k=k: jnp.asarray(k, c.dtype), state.opt_state)
    )
    logged = float(state.learning_rate)
    moved = state.apply_gradients(grads={"w": g}).params["w"] - state.params["w"]
    np.testing.assert_allclose(moved, -logged * g, rtol=1e-5, atol=1e-9)
    expected = _rate(k, 0.1, schedule, warmup, total=60, end=0.2)
    np.testing.assert_allclose(logged, expected, rtol=1e-5, atol=1e-9)


def test_adam_adamw_l2_and_clipping_match_their_first_update():
  p, g = np.array([1.0, -3.0]), np.array([0.5, 2.0])
  lr, wd, eps = 1e-2, 0.1, 1e-8
  first = lambda grad: grad / (np.abs(grad) + eps)  # Adam's bias-corrected first step.

  def update(**group):
    state = _state({"w": p}, learning_rate=lr, **group)
    return np.asarray(state.apply_gradients(grads={"w": jnp.asarray(g)}).params["w"]) - p

  np.testing.assert_allclose(update(), -lr * first(g), rtol=1e-5)
  # adamw: decay decoupled from the gradient, scaled by the rate.
  np.testing.assert_allclose(
    update(name="adamw", weight_decay=wd), -lr * (first(g) + wd * p), rtol=1e-5
  )
  # adam + weight decay: L2, added to the gradient before Adam.
  np.testing.assert_allclose(update(weight_decay=wd), -lr * first(g + wd * p), rtol=1e-5)
  # Clipping to global norm 1 before SGD.
  clipped = update(name="sgd", clip_norm=1.0)
  np.testing.assert_allclose(clipped, -lr * g / np.linalg.norm(g), rtol=1e-5)
  np.testing.assert_allclose(update(name="sgd", clip_norm=10.0), -lr * g, rtol=1e-5)
  # SGD with momentum: the second update adds the first's velocity.
  state = _state({"w": p}, learning_rate=lr, name="sgd", momentum=0.9)
  for _ in range(2):
    state = state.apply_gradients(grads={"w": jnp.asarray(g)})
  np.testing.assert_allclose(state.params["w"], p - lr * g - lr * (0.9 * g + g), rtol=1e-5)


def test_ema_copies_the_parameters_until_its_start_then_averages():
  state = _state({"w": np.zeros(3)}, learning_rate=1.0, name="sgd", ema_decay=0.9, ema_start=2)
  expected = np.zeros(3)
  for k, grad in enumerate([1.0, 2.0, -1.0, 0.5, 3.0]):
    state = state.apply_gradients(grads={"w": jnp.full(3, grad)})
    params = np.asarray(state.params["w"])
    expected = params if k < 2 else 0.9 * expected + 0.1 * params
    np.testing.assert_allclose(state.ema_params["w"], expected, rtol=1e-6)
  assert state.eval_params is state.ema_params
  assert not np.allclose(state.ema_params["w"], state.params["w"])
  plain = _state({"w": np.zeros(3)}, learning_rate=1.0)
  assert plain.ema_params == {} and plain.eval_params is plain.params


class _Dense(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    return nn.Dense(3)(x)


def test_create_initialises_the_module_and_its_optimizer():
  optimizer = make_optimizer(common.optimizer(1e-3, ema_decay=0.5), 10, "optim")
  state = TrainState.create(_Dense(), jax.random.key(0), jnp.ones((1, 4)), optimizer)
  assert state.params["Dense_0"]["kernel"].shape == (4, 3) and int(state.step) == 0
  assert state.batch_stats == {} and jax.tree.leaves(state.opt_state)
  np.testing.assert_array_equal(
    state.ema_params["Dense_0"]["kernel"], state.params["Dense_0"]["kernel"]
  )
  assert set(state.variables()) == {"params", "batch_stats"}


def test_a_skipped_update_leaves_the_schedule_and_ema_in_step():
  """The guard keeps the network's update count with its optimizer's: the
  next update uses the rate the skipped one would have used."""
  net = _state({"w": np.zeros(2)}, learning_rate=1.0, name="sgd", schedule="linear", decay_steps=4)

  def step(state, batch, key):
    del key
    net = state.net.apply_gradients(grads={"w": batch})
    return state.replace(step=state.step + 1, net=net), {"loss": jnp.sum(batch)}

  guarded = jax.jit(guards.guard_nonfinite(step))
  state = SingleNetworkState.create(net)
  state, _ = guarded(state, jnp.ones(2), None)  # Rate 1.0.
  state, metrics = guarded(state, jnp.array([np.nan, 1.0]), None)  # Skipped.
  assert metrics["nonfinite"] == 1 and int(state.step) == 2 and int(state.net.step) == 1
  before = state.net.params["w"]
  state, _ = guarded(state, jnp.ones(2), None)  # Update 2 of 4: rate 0.75.
  np.testing.assert_allclose(before - state.net.params["w"], 0.75)


@pytest.mark.parametrize(
  "field,value,message",
  [
    ("learning_rate", 0.0, "optim.learning_rate=0.0; it must be a positive number"),
    ("learning_rate", -1e-3, "optim.learning_rate=-0.001; it must be a positive number"),
    ("learning_rate", float("nan"), "optim.learning_rate=nan"),
    ("name", "lamb", "optim.name='lamb'; it must be one of ('adam', 'adamw', 'sgd')"),
    ("schedule", "step", "optim.schedule='step'; it must be one of"),
    ("b1", 1.0, "optim.b1=1.0; it must be in [0, 1)"),
    ("ema_decay", -0.1, "optim.ema_decay=-0.1; it must be in [0, 1)"),
    ("clip_norm", -1.0, "optim.clip_norm=-1.0; it must be 0 or more"),
    ("warmup_steps", -5, "optim.warmup_steps=-5; it must be 0 or more"),
    ("eps", 0.0, "optim.eps=0.0; it must be positive"),
  ],
)
def test_bad_values_name_the_field(field, value, message):
  group = common.optimizer(1e-3)
  group[field] = value
  with pytest.raises(ConfigError, match=re.escape(message)):
    make_optimizer(group, 100, "optim")
