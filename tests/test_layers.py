"""The sub-pixel transposed convolution against its definition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imgen.models import layers


def _torch_definition(x, w):
  """PyTorch ConvTranspose2d(k=4, s=2, p=1) by its scatter definition, in NumPy.

  y[n, 2i - 1 + ki, 2j - 1 + kj, o] += x[n, i, j, c] * w[ki, kj, c, o].
  """
  n, h, wd, _ = x.shape
  y = np.zeros((n, 2 * h + 2, 2 * wd + 2, w.shape[-1]))  # One extra row/col each side.
  for ki in range(4):
    for kj in range(4):
      contrib = np.einsum("nijc,co->nijo", x, w[ki, kj])
      y[:, ki : ki + 2 * h : 2, kj : kj + 2 * wd : 2] += contrib
  return y[:, 1:-1, 1:-1]


@pytest.mark.parametrize("shape", [(2, 3, 3, 4, 5), (1, 7, 5, 3, 2)])
def test_both_forms_match_the_definition(shape):
  n, h, w, cin, cout = shape
  rng = np.random.default_rng(0)
  x = rng.standard_normal((n, h, w, cin))
  k = rng.standard_normal((4, 4, cin, cout))
  expected = _torch_definition(x, k)
  for impl in (layers.conv_transpose_4x4s2, layers.conv_transpose_4x4s2_subpixel):
    got = np.asarray(impl(jnp.asarray(x, jnp.float32), jnp.asarray(k, jnp.float32)))
    assert got.shape == (n, 2 * h, 2 * w, cout)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("shape", [(2, 6, 6, 8, 3), (1, 7, 5, 3, 2), (2, 3, 4, 4, 5)])
def test_subpixel_gradients_equal_the_reference(shape):
  n, h, w, cin, cout = shape
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((n, h, w, cin)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((4, 4, cin, cout)), jnp.float32)
  target = jnp.asarray(rng.standard_normal((n, 2 * h, 2 * w, cout)), jnp.float32)

  def grads(impl):
    loss = lambda x, k: jnp.sum((impl(x, k) - target) ** 2)
    return jax.grad(loss, argnums=(0, 1))(x, k)

  reference, subpixel = (
    grads(layers.conv_transpose_4x4s2),
    grads(layers.conv_transpose_4x4s2_subpixel),
  )
  for ref, got in zip(reference, subpixel, strict=True):
    np.testing.assert_allclose(got, ref, atol=1e-3, rtol=1e-4)


def test_module_uses_the_chosen_form():
  x = jnp.asarray(np.random.default_rng(2).standard_normal((1, 4, 4, 3)), jnp.float32)
  outs = []
  for impl in ("subpixel", "transpose"):
    module = layers.ConvTranspose4x4S2(5, impl)
    variables = module.init(jax.random.key(0), x)
    assert variables["params"]["kernel"].shape == (4, 4, 3, 5)
    outs.append(module.apply(variables, x))
  np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
