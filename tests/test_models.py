"""DCGAN shapes, parameter counts and geometry checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imgen.core.errors import ConfigError
from imgen.models import dcgan


def _count(variables):
  return sum(x.size for x in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 3), (8, 1)])
def test_shapes(size, channels):
  g = dcgan.Generator(size, channels, width=8)
  d = dcgan.Discriminator(size, width=8)
  z = jnp.ones((3, 16))

  def forward(z):
    images = g.apply(g.init(jax.random.key(0), z), z, train=False)
    return images, d.apply(d.init(jax.random.key(1), images), images, train=False)

  images, logits = jax.eval_shape(forward, z)  # Shapes: nothing compiled.
  assert images.shape == (3, size, size, channels)
  assert logits.shape == (3,)
  if size == 8:  # Values at the smallest size: tanh's range.
    images, _ = jax.jit(forward)(z)
    assert 0.0 < float(jnp.max(jnp.abs(images))) <= 1.0


def test_parameter_counts_match_the_paper_network():
  # The PyTorch DCGAN tutorial's netG/netD (nz=100, ngf=ndf=64, nc=3, 64x64).
  g = dcgan.Generator(64, 3, width=64)
  d = dcgan.Discriminator(64, width=64)
  shapes = lambda net, x: jax.eval_shape(net.init, jax.random.key(0), x)  # Nothing computed.
  assert _count(shapes(g, jnp.ones((1, 100)))) == 3_576_704
  assert _count(shapes(d, jnp.ones((1, 64, 64, 3)))) == 2_765_568


@pytest.mark.parametrize("size", [30, 4, 9, 100 * 3])
def test_impossible_sizes_fail_clearly(size):
  with pytest.raises(ConfigError, match="cannot be made by DCGAN"):
    dcgan.geometry(size)


def test_batchnorm_updates_running_stats_in_train_mode_only():
  g = dcgan.Generator(8, 1, width=4)
  z = jax.random.normal(jax.random.key(0), (16, 8))
  variables = g.init(jax.random.key(1), z)
  _, updates = g.apply(variables, z, train=True, mutable=["batch_stats"])
  before, after = jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(updates["batch_stats"])
  assert any(float(jnp.max(jnp.abs(a - b))) > 0 for a, b in zip(before, after, strict=True))
  _, frozen = g.apply(variables, z, train=False, mutable=["batch_stats"])
  for a, b in zip(before, jax.tree.leaves(frozen["batch_stats"]), strict=True):
    np.testing.assert_array_equal(a, b)
