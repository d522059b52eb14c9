"""GroupNorm (then swish) and BatchNorm (then ReLU) with their gradients written out.

`GroupNorm` is `nn.GroupNorm(num_groups, epsilon=..., dtype=...)` (the same
parameters, `scale` and `bias`, so checkpoints of either load into the other),
and with `swish=True` it is `nn.swish` of it, the pair every DDPM U-Net block
starts with (Ho et al. 2020; Nichol & Dhariwal 2021).

On XLA's CPU backend flax's form costs several passes over the activations
each way: the group reshape (N, H, W, G, C/G) reduced over three axes, the
normalisation, swish, and autodiff's gradient of each, with layout copies
between them (a quarter of the diffusion U-Net step's traced operations,
2026-12-06, `benchmarks/profile_step.py`). The CPU form makes one reduction pass for the
per-channel sums of x and x^2 (summed into groups on the small (N, C) array)
and one elementwise pass for y = x * a + b (a and b per image and channel),
swish included; its backward is one reduction pass for the per-channel sums
of dy and dy * x and one elementwise pass dx = dy * A + x * B + C, where, per
group of M = H * W * C/G values,

  dx = rstd * (scale * dy - (S1 + xhat * S2) / M),
  S1 = sum(scale * dy),  S2 = sum(scale * dy * xhat),  xhat = (x - mean) * rstd,

the gradient of y = xhat * scale + bias through the mean and the variance
(the usual normalisation gradient). Values and gradients equal flax's to
float rounding (tests/test_norms.py). The statistics are float32 under
bfloat16 too, as flax's are, and the variance is flax's E[x^2] - E[x]^2,
clipped at 0. On GPU and TPU flax's form runs (`imgen.core.backend`).

`BatchNorm` (the segmentation U-Net's) is `nn.BatchNorm` (its parameters and
batch statistics, by name), then ReLU with `relu=True`; in training on CPU its
statistics (synchronised over `axis_name`'s devices as flax's are) and
gradient come from `batch_norm`, the same two passes each way.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from imgen.core import backend


def _per_channel(v: jax.Array, channels: int) -> jax.Array:
  """(N, G) -> (N, C): each group's value for each of its channels."""
  return jnp.repeat(v, channels // v.shape[1], axis=1)


def _group_sums(v: jax.Array, groups: int) -> jax.Array:
  """(N, C) -> (N, G): the sum of each group's channels."""
  return v.reshape(v.shape[0], groups, -1).sum(-1)


def _affine(x, scale, bias, mean, rstd):
  """The per-(image, channel) a and b of y = x * a + b, as (N, 1, 1, C)."""
  c = x.shape[-1]
  a = scale[None] * _per_channel(rstd, c)
  b = bias[None] - _per_channel(mean, c) * a
  return a[:, None, None], b[:, None, None]


def _swish_grad(y: jax.Array) -> jax.Array:
  s = jax.nn.sigmoid(y)
  return s * (1 + y * (1 - s))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def group_norm(x, scale, bias, groups: int, epsilon: float, swish: bool, dtype) -> jax.Array:
  """GroupNorm of NHWC `x` (then swish when `swish`), in `dtype`."""
  return _forward(x, scale, bias, groups, epsilon, swish, dtype)[0]


def _forward(x, scale, bias, groups, epsilon, swish, dtype):
  n, h, w, c = x.shape
  xf = x.astype(jnp.float32)
  size = h * w * (c // groups)
  mean = _group_sums(jnp.sum(xf, axis=(1, 2)), groups) / size
  square = _group_sums(jnp.sum(xf * xf, axis=(1, 2)), groups) / size
  rstd = jax.lax.rsqrt(jnp.maximum(0.0, square - mean * mean) + epsilon)
  a, b = _affine(xf, scale, bias, mean, rstd)
  y = xf * a + b
  if swish:
    y = y * jax.nn.sigmoid(y)
  return y.astype(dtype), (x, scale, bias, mean, rstd)


def _backward(groups, epsilon, swish, dtype, residuals, g):
  del epsilon, dtype
  x, scale, bias, mean, rstd = residuals
  n, h, w, c = x.shape
  xf, dy = x.astype(jnp.float32), g.astype(jnp.float32)
  if swish:  # Recomputed: one more elementwise term in the passes below.
    a, b = _affine(xf, scale, bias, mean, rstd)
    dy = dy * _swish_grad(xf * a + b)
  t1 = jnp.sum(dy, axis=(1, 2))  # (N, C): sum of dy.
  t2 = jnp.sum(dy * xf, axis=(1, 2))  # (N, C): sum of dy * x.
  rc, mc = _per_channel(rstd, c), _per_channel(mean, c)
  u = rc * (t2 - mc * t1)  # (N, C): sum of dy * xhat.
  size = h * w * (c // groups)
  s1 = _per_channel(_group_sums(scale[None] * t1, groups), c)
  s2 = _per_channel(_group_sums(scale[None] * u, groups), c)
  coef_dy = rc * scale[None]
  coef_x = -rc * rc * s2 / size
  const = -rc * (s1 - mc * rc * s2) / size
  dx = dy * coef_dy[:, None, None] + xf * coef_x[:, None, None] + const[:, None, None]
  return dx.astype(x.dtype), jnp.sum(u, 0), jnp.sum(t1, 0)


group_norm.defvjp(_forward, _backward)


class GroupNorm(nn.Module):
  """`nn.GroupNorm(num_groups, epsilon=epsilon, dtype=dtype)` over NHWC, then
  `nn.swish` when `swish`. Named like flax's, with its parameters, so flax
  names its instances GroupNorm_0, ... as it names nn.GroupNorm's."""

  num_groups: int = 32
  epsilon: float = 1e-6
  swish: bool = False
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    dtype = self.dtype or jnp.promote_types(x.dtype, jnp.float32)
    if backend.cpu_forms() and x.ndim == 4:
      return group_norm(x, scale, bias, self.num_groups, self.epsilon, self.swish, dtype)
    flax_norm = nn.GroupNorm(self.num_groups, epsilon=self.epsilon, dtype=self.dtype, parent=None)
    y = flax_norm.apply({"params": {"scale": scale, "bias": bias}}, x)
    return nn.swish(y) if self.swish else y


def _pmean(values, axis_name):
  return values if axis_name is None else jax.lax.pmean(values, axis_name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def batch_norm(x, scale, bias, epsilon: float, relu: bool, axis_name, dtype):
  """Training-mode BatchNorm of NHWC `x` over (N, H, W) and, with `axis_name`,
  over the devices of that axis (then ReLU when `relu`): (y in `dtype`, the
  batch mean, the batch variance), the statistics as flax's."""
  return _bn_forward(x, scale, bias, epsilon, relu, axis_name, dtype)[0]


def _bn_affine(xf, scale, bias, mean, rstd):
  """y = (x - mean) * rstd * scale + bias, as x * a + b."""
  a = scale * rstd
  return xf * a + (bias - mean * a)


def _bn_forward(x, scale, bias, epsilon, relu, axis_name, dtype):
  xf = x.astype(jnp.float32)
  count = x.size // x.shape[-1]
  mean, square = _pmean(
    (jnp.sum(xf, (0, 1, 2)) / count, jnp.sum(xf * xf, (0, 1, 2)) / count), axis_name
  )
  var = jnp.maximum(0.0, square - mean * mean)
  rstd = jax.lax.rsqrt(var + epsilon)
  y = _bn_affine(xf, scale, bias, mean, rstd)
  if relu:
    y = jnp.maximum(y, 0.0)
  return (y.astype(dtype), mean, var), (x, scale, bias, mean, rstd)


def _bn_backward(epsilon, relu, axis_name, dtype, residuals, cotangents):
  """Through y = (x - mean) * rstd * scale + bias, mean = E[x], var = E[x^2] - mean^2
  (E over the batch and the devices), and the cotangents of the returned mean and var."""
  del epsilon, dtype
  x, scale, bias, mean, rstd = residuals
  g, g_mean, g_var = cotangents
  xf, dy = x.astype(jnp.float32), g.astype(jnp.float32)
  if relu:  # y > 0, recomputed from x.
    dy = jnp.where(_bn_affine(xf, scale, bias, mean, rstd) > 0, dy, 0.0)
  count = x.size // x.shape[-1]
  t1, t2 = jnp.sum(dy, (0, 1, 2)), jnp.sum(dy * xf, (0, 1, 2))  # Local sums of dy, dy * x.
  m1, m2, g_mean, g_var = _pmean((t1 / count, t2 / count, g_mean / count, g_var / count), axis_name)
  # d(loss)/d(var) and d(loss)/d(mean) per element of the batch (divided by its size).
  d_var = -0.5 * rstd**3 * scale * (m2 - mean * m1) + g_var
  d_mean = -rstd * scale * m1 + g_mean - 2.0 * mean * d_var
  dx = dy * (rstd * scale) + (d_mean + 2.0 * xf * d_var)
  return dx.astype(x.dtype), rstd * (t2 - mean * t1), t1


batch_norm.defvjp(_bn_forward, _bn_backward)


class BatchNorm(nn.Module):
  """`nn.BatchNorm(use_running_average, momentum=..., epsilon=..., axis_name=...,
  dtype=...)` over NHWC's channels (its parameters and batch statistics, by
  name), then ReLU when `relu`. In training on the CPU backend its batch
  statistics and gradient are `batch_norm`'s: one reduction and one
  elementwise pass each way instead of autodiff's several."""

  use_running_average: bool = False
  momentum: float = 0.99
  epsilon: float = 1e-5
  axis_name: str | None = None
  relu: bool = False
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    dtype = self.dtype or jnp.promote_types(x.dtype, jnp.float32)
    axis_name = None if self.is_initializing() else self.axis_name
    if self.use_running_average:
      mul = jax.lax.rsqrt(ra_var.value + self.epsilon) * scale
      y = ((x - ra_mean.value) * mul + bias).astype(dtype)
    elif backend.cpu_forms() and x.ndim == 4:
      y, mean, var = batch_norm(x, scale, bias, self.epsilon, self.relu, axis_name, dtype)
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
      return y
    else:
      flax_norm = nn.BatchNorm(
        use_running_average=False,
        momentum=self.momentum,
        epsilon=self.epsilon,
        axis_name=axis_name,
        dtype=self.dtype,
        parent=None,
      )
      variables = {"params": {"scale": scale, "bias": bias}}
      variables["batch_stats"] = {"mean": ra_mean.value, "var": ra_var.value}
      y, updates = flax_norm.apply(variables, x, mutable=["batch_stats"])
      if not self.is_initializing():
        ra_mean.value = updates["batch_stats"]["mean"]
        ra_var.value = updates["batch_stats"]["var"]
    return nn.relu(y) if self.relu else y
