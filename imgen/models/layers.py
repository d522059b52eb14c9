"""Layers whose plain XLA form is slow on CPU, rewritten exactly.

`ConvTranspose4x4S2` is PyTorch's `ConvTranspose2d(k=4, stride=2, padding=1)`
(the DCGAN upsampling layer): y[2i - 1 + k] += x[i] * w[k] along each axis,
doubling height and width. XLA lowers its gradients to convolutions with a
dilated input, which its CPU backend runs 10-20x slower than plain
convolutions. The `subpixel` form computes each of the four output phases
(even/odd row x even/odd column) as a 2x2 stride-1 convolution of the input
with four of the sixteen kernel taps, then interleaves them: the same sums,
so its forward and gradients equal the `transpose` form up to float rounding.
"""

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

_DIMS = ("NHWC", "HWIO", "NHWC")

# Output phase -> (padding of the input, kernel taps in window order).
# Even outputs y[2m] = x[m-1] w[3] + x[m] w[1]; odd y[2m+1] = x[m] w[2] + x[m+1] w[0].
_PHASES = {0: ((1, 0), (3, 1)), 1: ((0, 1), (2, 0))}


def conv_transpose_4x4s2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Reference form: a stride-1 convolution of the 2x-dilated input."""
  return lax.conv_general_dilated(
    x,
    kernel[::-1, ::-1],
    window_strides=(1, 1),
    padding=((2, 2), (2, 2)),
    lhs_dilation=(2, 2),
    dimension_numbers=_DIMS,
  )


@jax.custom_vjp
def conv_transpose_4x4s2_subpixel(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Four 2x2 phase convolutions, interleaved; equal to the reference.

  Its gradients are written out too (`_subpixel_bwd`): XLA's own gradients of
  the phase convolutions still run its slow weight-gradient kernels.
  """
  return _subpixel_forward(x, kernel)


def _subpixel_forward(x: jax.Array, kernel: jax.Array) -> jax.Array:
  rows = []
  for row_pad, row_taps in _PHASES.values():
    phases = []
    for col_pad, col_taps in _PHASES.values():
      k = kernel[jnp.array(row_taps)][:, jnp.array(col_taps)]
      xp = jnp.pad(x, ((0, 0), row_pad, col_pad, (0, 0)))
      phases.append(lax.conv_general_dilated(xp, k, (1, 1), "VALID", dimension_numbers=_DIMS))
    rows.append(jnp.stack(phases, axis=3))  # (N, H, W, col phase, C)
  y = jnp.stack(rows, axis=2)  # (N, H, row phase, W, col phase, C)
  n, h, _, w, _, c = y.shape
  return y.reshape(n, 2 * h, 2 * w, c)


def _subpixel_fwd(x, kernel):
  return _subpixel_forward(x, kernel), (x, kernel)


def _subpixel_bwd(residuals, g):
  """Gradients of y[2i - 1 + k] += x[i] w[k] (per axis) for output cotangent g."""
  x, kernel = residuals
  # dx[i] = sum_k g[2i - 1 + k] w[k]^T: a plain stride-2 4x4 convolution of g.
  dx = lax.conv_general_dilated(
    g, kernel.transpose(0, 1, 3, 2), (2, 2), ((1, 1), (1, 1)), dimension_numbers=_DIMS
  )
  # dw[k] = sum_i x[i]^T g[2i - 1 + k]: one matmul of x with the 16 stride-2
  # views of the padded g, which XLA runs as a fast GEMM.
  _, h, w, cin = x.shape
  gp = jnp.pad(g, ((0, 0), (1, 1), (1, 1), (0, 0)))
  views = [gp[:, i : i + 2 * h : 2, j : j + 2 * w : 2] for i in range(4) for j in range(4)]
  dw = jnp.einsum("nhwc,nhwko->kco", x, jnp.stack(views, axis=3))
  return dx.astype(x.dtype), dw.reshape(kernel.shape).astype(kernel.dtype)


conv_transpose_4x4s2_subpixel.defvjp(_subpixel_fwd, _subpixel_bwd)

IMPLEMENTATIONS = {
  "subpixel": conv_transpose_4x4s2_subpixel,
  "transpose": conv_transpose_4x4s2,
}


class ConvTranspose4x4S2(nn.Module):
  """Doubles the resolution; kernel (4, 4, in, out) with PyTorch's layout."""

  features: int
  impl: str = "subpixel"
  kernel_init: nn.initializers.Initializer = nn.initializers.normal(0.02)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (4, 4, x.shape[-1], self.features), jnp.float32)
    return IMPLEMENTATIONS[self.impl](x.astype(self.dtype), kernel.astype(self.dtype))
