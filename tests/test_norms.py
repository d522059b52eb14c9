"""The written GroupNorm and BatchNorm against flax's."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imgen.core import backend
from imgen.models import norms


def _flax(x, params, groups, swish, dtype=None):
  y = nn.GroupNorm(groups, epsilon=1e-6, dtype=dtype).apply({"params": params}, x)
  return nn.swish(y) if swish else y


@pytest.mark.parametrize("swish", [True, False])
@pytest.mark.parametrize("shape,groups", [((3, 6, 5, 16), 4), ((2, 4, 4, 12), 12)])
def test_group_norm_equals_flax_in_values_and_gradients(shape, groups, swish):
  rng = np.random.default_rng(0)
  # An offset mean and a spread of scales: the variance's two terms both matter.
  x = jnp.asarray(rng.normal(size=shape) * 3 + 1.5, jnp.float32)
  params = {
    "scale": jnp.asarray(rng.normal(size=shape[-1]), jnp.float32),
    "bias": jnp.asarray(rng.normal(size=shape[-1]), jnp.float32),
  }
  cotangent = jnp.asarray(rng.normal(size=shape), jnp.float32)
  module = norms.GroupNorm(groups, epsilon=1e-6, swish=swish)

  def vjp(f):
    y, pullback = jax.vjp(f, x, params)
    return y, pullback(cotangent)

  want_y, (want_dx, want_dp) = jax.jit(lambda: vjp(lambda x, p: _flax(x, p, groups, swish)))()
  for forms in ("cpu", "xla"):
    with backend.layer_forms(forms):
      got_y, (got_dx, got_dp) = jax.jit(lambda: vjp(lambda x, p: module.apply({"params": p}, x)))()
    np.testing.assert_allclose(got_y, want_y, atol=2e-5)
    np.testing.assert_allclose(got_dx, want_dx, atol=2e-5, rtol=1e-4)
    for name in ("scale", "bias"):
      np.testing.assert_allclose(got_dp[name], want_dp[name], atol=1e-4, rtol=1e-4)


def test_group_norm_has_flax_parameters_and_bfloat16_output():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 4, 8)), jnp.float32)
  ours = norms.GroupNorm(4, dtype=jnp.bfloat16).init(jax.random.key(0), x)
  theirs = nn.GroupNorm(4, dtype=jnp.bfloat16).init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, theirs)
  with backend.layer_forms("cpu"):
    y = norms.GroupNorm(4, dtype=jnp.bfloat16).apply(theirs, x)
  assert y.dtype == jnp.bfloat16
  want = _flax(x, theirs["params"], 4, False, jnp.bfloat16)
  np.testing.assert_allclose(y.astype(np.float32), want.astype(np.float32), atol=3e-2)


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("devices", [None, 3])
def test_batch_norm_equals_flax_in_values_gradients_and_statistics(relu, devices):
  """Training mode, on one device or synchronised over a (vmapped) device axis."""
  rng = np.random.default_rng(2)
  shape = (devices or 1, 4, 5, 3, 6)
  x = jnp.asarray(rng.normal(size=shape) * 2 - 0.7, jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=shape), jnp.float32)
  axis = "devices" if devices else None
  ours = norms.BatchNorm(momentum=0.9, axis_name=axis, relu=relu)
  theirs = nn.BatchNorm(use_running_average=False, momentum=0.9, axis_name=axis)
  variables = theirs.init(jax.random.key(0), x[0])
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x[0])) == jax.tree.map(
    jnp.shape, variables
  )
  variables = {
    "params": {"scale": jnp.linspace(0.5, 2, 6), "bias": jnp.linspace(-1, 1, 6)},
    "batch_stats": {"mean": jnp.full(6, 0.3), "var": jnp.full(6, 1.7)},
  }

  def run(module, after):
    def one_device(x, cotangent, params):  # The gradient inside the device axis, as in pmap.
      def loss(x, params):
        y, updates = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
        y = after(y)
        return jnp.sum(y * cotangent), (y, updates["batch_stats"])

      return jax.grad(loss, argnums=(0, 1), has_aux=True)(x, params)

    per_device = jax.vmap(one_device, in_axes=(0, 0, None), axis_name=axis)
    return jax.jit(per_device)(x, cotangent, variables["params"])

  (want_dx, want_dp), (want_y, want_stats) = run(theirs, nn.relu if relu else lambda y: y)
  for forms in ("cpu", "xla"):
    with backend.layer_forms(forms):
      (got_dx, got_dp), (got_y, got_stats) = run(ours, lambda y: y)
    np.testing.assert_allclose(got_y, want_y, atol=2e-5)
    np.testing.assert_allclose(got_dx, want_dx, atol=2e-5, rtol=1e-4)
    for tree_got, tree_want in ((got_dp, want_dp), (got_stats, want_stats)):
      for name in tree_want:
        np.testing.assert_allclose(tree_got[name], tree_want[name], atol=1e-4, rtol=1e-4)


def test_batch_norm_with_running_averages_is_flaxs():
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 3, 3, 4)), jnp.float32)
  variables = {
    "params": {"scale": jnp.arange(1.0, 5.0), "bias": jnp.arange(4.0)},
    "batch_stats": {"mean": jnp.full(4, 0.5), "var": jnp.full(4, 2.0)},
  }
  want = nn.relu(nn.BatchNorm(use_running_average=True).apply(variables, x))
  got = norms.BatchNorm(use_running_average=True, relu=True).apply(variables, x)
  np.testing.assert_allclose(got, want, atol=1e-6)
