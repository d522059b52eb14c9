"""Layers whose plain XLA form is slow on CPU, rewritten exactly.

`ConvTranspose4x4S2` is PyTorch's `ConvTranspose2d(k=4, stride=2, padding=1)`
(the DCGAN upsampling layer): y[2i - 1 + k] += x[i] * w[k] along each axis,
doubling height and width. XLA lowers its gradients to convolutions with a
dilated input, which its CPU backend runs 10-20x slower than plain
convolutions. The `subpixel` form computes each of the four output phases
(even/odd row x even/odd column) as a 2x2 stride-1 convolution of the input
with four of the sixteen kernel taps, then interleaves them: the same sums,
so its forward and gradients equal the `transpose` form up to float rounding.

`Conv4x4S2` is the matching downsampling convolution (`Conv2d(k=4, stride=2,
padding=1)`, DCGAN's discriminator). Its forward is XLA's; its input gradient
is a transposed convolution, which it computes in the sub-pixel form.

`Conv` is `nn.Conv` (every trained convolution in imgen but the 4x4 stride-2
ones above), with its weight gradient in the same canonical form: as fast as
XLA's own outside loops, and inside `lax.scan`, where XLA's own ran ~90x
slower (3x3, 28x28x32, a 4-step loop).

`max_pool_2x2` is `nn.max_pool(x, (2, 2), (2, 2))` as a max over a reshape.

These forms are for XLA's CPU backend. On GPU and TPU each layer takes XLA's
own form (`imgen.core.backend` decides, once for all of them; both forms are
tested equal). `upsample_nearest_2x` is one form everywhere: a broadcast and
a reshape, whose gradient is a sum (a gather's is a scatter-add).

Both convolutions write their weight gradients as one convolution in the form XLA's CPU
backend gives a weight gradient before running it on its fast kernel, so it
stays fast inside `lax.scan` too, and both take XLA's own form of the
transposed convolution where it is faster (under 16 output channels). Per-layer
timings are in BENCHMARKS.md.
"""

from collections.abc import Sequence
import functools
from typing import ClassVar

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from imgen.core import backend

_DIMS = ("NHWC", "HWIO", "NHWC")

# Output phase -> (padding of the input, kernel taps in window order).
# Even outputs y[2m] = x[m-1] w[3] + x[m] w[1]; odd y[2m+1] = x[m] w[2] + x[m+1] w[0].
# The taps are strided slices (3, 1) and (2, 0), not gathers.
_PHASES = {0: ((1, 0), slice(3, None, -2)), 1: ((0, 1), slice(2, None, -2))}


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
  return _transpose_forward(x, kernel)


# With fewer output channels than this, XLA's own transposed convolution is
# faster than the four phase convolutions (measured with Eigen's kernels:
# 5.8 vs 24 ms for DCGAN's 64 -> 3-channel last layer; 5.4 vs 23 ms for the
# input gradient of its 3-channel first D layer).
_SUBPIXEL_MIN_CHANNELS = 16


def _transpose_forward(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The transposed convolution in whichever exact form is faster for its width."""
  if kernel.shape[-1] < _SUBPIXEL_MIN_CHANNELS:
    return conv_transpose_4x4s2(x, kernel)
  return _subpixel_forward(x, kernel)


def _subpixel_forward(x: jax.Array, kernel: jax.Array) -> jax.Array:
  rows = []
  for row_pad, row_taps in _PHASES.values():
    phases = []
    for col_pad, col_taps in _PHASES.values():
      k = kernel[row_taps, col_taps]
      xp = jnp.pad(x, ((0, 0), row_pad, col_pad, (0, 0)))
      phases.append(lax.conv_general_dilated(xp, k, (1, 1), "VALID", dimension_numbers=_DIMS))
    rows.append(jnp.stack(phases, axis=3))  # (N, H, W, col phase, C)
  y = jnp.stack(rows, axis=2)  # (N, H, row phase, W, col phase, C)
  n, h, _, w, _, c = y.shape
  return y.reshape(n, 2 * h, 2 * w, c)


def _subpixel_fwd(x, kernel):
  return _transpose_forward(x, kernel), (x, kernel)


def _subpixel_bwd(residuals, g):
  """Gradients of y[2i - 1 + k] += x[i] w[k] (per axis) for output cotangent g."""
  x, kernel = residuals
  # dx[i] = sum_k g[2i - 1 + k] w[k]^T: a plain stride-2 4x4 convolution of g.
  dx = conv_4x4s2(g, _swap_io(kernel))
  # dw[k] = sum_i x[i]^T g[2i - 1 + k]: the weight gradient of that same
  # convolution of g, for output cotangent x (in/out channels swapped).
  dw = _swap_io(_conv_4x4s2_weight_grad(g, x))
  return dx.astype(x.dtype), dw.astype(kernel.dtype)


conv_transpose_4x4s2_subpixel.defvjp(_subpixel_fwd, _subpixel_bwd)


def _swap_io(kernel: jax.Array) -> jax.Array:
  return kernel.transpose(0, 1, 3, 2)


def conv_4x4s2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Reference form: y[o] = sum_k x[2o - 1 + k] w[k] along each axis (padding 1)."""
  return lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_DIMS)


def _conv_4x4s2_weight_grad(x: jax.Array, g: jax.Array) -> jax.Array:
  """d/dw of sum(g * conv_4x4s2(x, w)): dw[k] = sum_o x[2o - 1 + k]^T g[o] per axis.

  Written as the convolution XLA makes of a weight gradient after its CPU
  canonicalisation (`_weight_grad`), so it runs on XLA's fast convolution kernel
  also inside loops (lax.scan), where XLA leaves its own weight gradients in a
  slow generic form.
  """
  return _weight_grad(x, g, (4, 4), (2, 2), ((1, 1), (1, 1)))


def _weight_grad(x, g, sizes, strides, pads) -> jax.Array:
  """dw[k] = sum_o x[s o + k - lo]^T g[o] per axis, in float32: the canonical
  weight-gradient convolution (channels as the batch, the batch contracted as
  features, g dilated by the stride s), whose output is the kernel's size."""
  dw_pads = tuple(
    (lo, k + s * (m - 1) - n - lo)
    for k, s, (lo, _), n, m in zip(sizes, strides, pads, x.shape[1:3], g.shape[1:3], strict=True)
  )
  dw = lax.conv_general_dilated(
    x.transpose(3, 1, 2, 0),  # (C, H, W, N): channels as the batch.
    g.transpose(1, 2, 0, 3),  # (Ho, Wo, N, O): the window, N contracted.
    window_strides=(1, 1),
    padding=dw_pads,
    rhs_dilation=strides,
    dimension_numbers=_DIMS,
    preferred_element_type=jnp.float32,  # Sums over the batch: float32 also under bf16.
  )
  return dw.transpose(1, 2, 0, 3)


@jax.custom_vjp
def conv_4x4s2_subpixel_grad(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`conv_4x4s2`, whose input gradient is taken in the sub-pixel form."""
  return conv_4x4s2(x, kernel)


def _conv_fwd(x, kernel):
  return conv_4x4s2(x, kernel), (x, kernel)


def _conv_bwd(residuals, g):
  """dx[i] = sum_{2o - 1 + k = i} g[o] w[k]^T is the transposed convolution of g."""
  x, kernel = residuals
  if x.shape[1] % 2 or x.shape[2] % 2:  # The transposed form makes even sizes only.
    _, vjp = jax.vjp(lambda x: conv_4x4s2(x, kernel), x)
    (dx,) = vjp(g)
  else:
    dx = _transpose_forward(g, _swap_io(kernel).astype(g.dtype))
  return dx.astype(x.dtype), _conv_4x4s2_weight_grad(x, g).astype(kernel.dtype)


conv_4x4s2_subpixel_grad.defvjp(_conv_fwd, _conv_bwd)

IMPLEMENTATIONS = {
  "subpixel": conv_transpose_4x4s2_subpixel,
  "transpose": conv_transpose_4x4s2,
}


DOWNSAMPLE_IMPLEMENTATIONS = {
  "subpixel": conv_4x4s2_subpixel_grad,
  "transpose": conv_4x4s2,
}


class _Kernel4x4(nn.Module):
  """A (4, 4, in, out) kernel in float32, applied in `dtype` by `implementations[impl]`,
  then a bias (zeros at first) when `use_bias`."""

  features: int
  impl: str = "subpixel"
  kernel_init: nn.initializers.Initializer = nn.initializers.normal(0.02)
  use_bias: bool = False
  dtype: jnp.dtype = jnp.float32
  implementations: ClassVar[dict] = {}

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (4, 4, x.shape[-1], self.features), jnp.float32)
    impl = self.impl if backend.cpu_forms() else "transpose"  # "transpose": XLA's own form.
    y = self.implementations[impl](x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
      y = y + bias.astype(y.dtype)
    return y


class ConvTranspose4x4S2(_Kernel4x4):
  """Doubles the resolution; kernel (4, 4, in, out) with PyTorch's layout."""

  implementations: ClassVar[dict] = IMPLEMENTATIONS


class Conv4x4S2(_Kernel4x4):
  """Halves the resolution: `nn.Conv(features, (4, 4), (2, 2), ((1, 1), (1, 1)),
  use_bias=use_bias)`, with the same parameters; `impl` picks the gradient's form."""

  implementations: ClassVar[dict] = DOWNSAMPLE_IMPLEMENTATIONS


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """`nn.max_pool(x, (2, 2), (2, 2))` (VALID: an odd last row or column is
  dropped) as a max over a reshape: the same values.

  Its gradient goes to the window's maximum through a compare. XLA's gradient
  of `nn.max_pool` is a select-and-gather whose CPU form, a reduce-window over
  (value, row, column) tuples built from iotas, took ~40 of the 28x28 CNN
  step's ~100 ms. The two differ only on exact ties (this gradient splits
  equally, XLA's goes to the first), and after a ReLU the ties are the zeros,
  whose gradient the ReLU stops anyway.
  """
  if not backend.cpu_forms():
    return nn.max_pool(x, (2, 2), (2, 2))
  n, h, w, c = x.shape
  x = x[:, : h - h % 2, : w - w % 2]
  return jnp.max(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def upsample_nearest_2x(x: jax.Array) -> jax.Array:
  """Each pixel of NHWC `x` repeated 2x2: `jax.image.resize(..., "nearest")` to
  twice the size, as a broadcast and a reshape. The same values; the gradient
  sums each 2x2 block (the resize's gather has a scatter-add for a gradient,
  which on GPU is atomics, not bitwise reproducible)."""
  n, h, w, c = x.shape
  return jnp.broadcast_to(x[:, :, None, :, None], (n, h, 2, w, 2, c)).reshape(n, 2 * h, 2 * w, c)


def _pads(padding, spatial, kernel, strides) -> tuple[tuple[int, int], ...]:
  """nn.Conv's padding ('SAME', 'VALID', an int, or pairs) as (low, high) per axis."""
  if isinstance(padding, str):
    return tuple(tuple(p) for p in lax.padtype_to_pads(spatial, kernel, strides, padding))
  if isinstance(padding, int):
    return tuple((padding, padding) for _ in kernel)
  return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


def _conv(x, kernel, strides, pads):
  return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_DIMS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv(x: jax.Array, kernel: jax.Array, strides: tuple, pads: tuple) -> jax.Array:
  """A convolution (NHWC, HWIO, `pads` (low, high) per axis) whose weight gradient
  is one convolution in the form XLA's CPU backend runs fast, inside loops too."""
  return _conv(x, kernel, strides, pads)


def _conv_fwd_rule(x, kernel, strides, pads):
  return _conv(x, kernel, strides, pads), (x, kernel)


def _conv_bwd_rule(strides, pads, residuals, g):
  """dw by `_weight_grad`; dx at stride 1 is the flipped kernel over g, at larger
  strides XLA's own input gradient."""
  x, kernel = residuals
  sizes = kernel.shape[:2]
  if strides == (1, 1):
    dx_pads = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(sizes, pads, strict=True))
    dx = _conv(g, _swap_io(kernel[::-1, ::-1]), strides, dx_pads)
  else:
    _, vjp = jax.vjp(lambda x: _conv(x, kernel, strides, pads), x)
    (dx,) = vjp(g)
  dw = _weight_grad(x, g, sizes, strides, pads)
  return dx.astype(x.dtype), dw.astype(kernel.dtype)


conv.defvjp(_conv_fwd_rule, _conv_bwd_rule)


class Conv(nn.Module):
  """`nn.Conv(features, kernel_size, strides=..., padding=..., use_bias=...)`:
  the same parameters (names, shapes, initial values) and values, the weight
  gradient by `conv`. Named like nn.Conv, so flax names its instances Conv_0, ...
  as it names nn.Conv's, and checkpoints of either load into the other."""

  features: int
  kernel_size: Sequence[int]
  strides: int | Sequence[int] = 1
  padding: str | int | Sequence = "SAME"
  use_bias: bool = True
  dtype: jnp.dtype | None = None
  kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    size = tuple(self.kernel_size)
    kernel = self.param("kernel", self.kernel_init, (*size, x.shape[-1], self.features))
    bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
    pads = _pads(self.padding, x.shape[1:3], size, strides)
    y = conv(x, kernel, strides, pads) if backend.cpu_forms() else _conv(x, kernel, strides, pads)
    return y if bias is None else y + bias
