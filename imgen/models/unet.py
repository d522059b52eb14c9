"""The U-Net of DDPM (Ho, Jain & Abbeel 2020, arXiv:2006.11239, Appendix B).

A PixelCNN++-style U-Net: `len(channel_mults)` resolutions, each with
`num_res_blocks` residual blocks (GroupNorm, swish, 3x3 convolutions, the
time embedding added between them, dropout before the second convolution) and
self-attention after each block at the resolutions in `attention_resolutions`;
a stride-2 3x3 convolution between resolutions on the way down, nearest
upsampling and a 3x3 convolution on the way up, where each level has one more
block than on the way down and every block reads the skip connection of its
counterpart concatenated to its input; a middle of block, attention, block.
The timestep enters as a sinusoidal embedding (Transformer-style) through two
dense layers of 4 * `channels`; a class-conditional model adds a learned
class embedding to it, with one extra class, `num_classes`, standing for "no
label" (classifier-free guidance). Initialisation as in the authors' code:
variance scaling (fan_avg, uniform), and a scale of 1e-10 for the last layer
of each residual branch and of the network, so every block starts near the
identity.

Conditioning on a sequence (text tokens, speech frames; `imgen.models.conditioned`):
given `context` (N, L, D) and its validity `context_mask` (N, L), the masked
mean of the context is added to the time embedding through a dense layer, and
at the resolutions in `cross_attention_resolutions` every block (and the
middle) is followed by multi-head cross-attention from the image positions to
the context (as in Rombach et al. 2022's latent diffusion U-Net), residual and
initialised near zero like the other branches. With `coordinates`, each
pixel's (x, y) in [-1, 1] joins the input as two channels (`pixel_coordinates`).

With the CIFAR-10 settings (channels 128, mults (1, 2, 2, 2), 2 blocks,
attention at 16x16) it has the paper's 35.7M parameters (35,746,307; counted
in tests/test_ddpm_paper.py by hand).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from imgen.core import parallel
from imgen.core.errors import ConfigError
from imgen.models.layers import Conv
from imgen.models.layers import upsample_nearest_2x
from imgen.models.norms import GroupNorm


def _init(scale: float = 1.0):
  return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


_DEFAULT = _init()
_LAST = _init(1e-10)  # The last layer of each residual branch.


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
  """(N,) timesteps -> (N, dim): sin of dim/2 geometric frequencies, then cos (as DDPM)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - 1))
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)


class GlobalDropout(nn.Module):
  """Dropout whose mask is this replica's slice of one draw for the global
  batch (`parallel.global_draw`), so any number of devices drops the same
  units; outside a device axis (`axis_name=None`) it draws locally."""

  rate: float
  axis_name: str | None = parallel.AXIS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if not train or self.rate == 0.0:
      return x
    key = self.make_rng("dropout")
    keep = lambda k, shape: jax.random.bernoulli(k, 1.0 - self.rate, shape)
    if self.axis_name is None:
      mask = keep(key, x.shape)
    else:
      mask = parallel.global_draw(keep, key, x.shape[0], x.shape[1:], self.axis_name)
    return jnp.where(mask, x / (1.0 - self.rate), 0.0).astype(x.dtype)


class ResBlock(nn.Module):
  features: int
  dropout: float
  groups: int
  axis_name: str | None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, emb: jax.Array, train: bool) -> jax.Array:
    conv = lambda init=_DEFAULT: Conv(self.features, (3, 3), dtype=self.dtype, kernel_init=init)
    norm_swish = lambda: GroupNorm(self.groups, epsilon=1e-6, swish=True, dtype=self.dtype)
    h = conv()(norm_swish()(x))
    h = (
      h
      + nn.Dense(self.features, dtype=self.dtype, kernel_init=_DEFAULT)(nn.swish(emb))[
        :, None, None
      ]
    )
    h = norm_swish()(h)
    h = conv(_LAST)(GlobalDropout(self.dropout, self.axis_name)(h, train))
    if x.shape[-1] != self.features:
      x = nn.Dense(self.features, dtype=self.dtype, kernel_init=_DEFAULT, name="shortcut")(x)
    return x + h


class AttentionBlock(nn.Module):
  """Single-head self-attention over the H * W positions, residual."""

  groups: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    dense = lambda name, init=_DEFAULT: nn.Dense(c, dtype=self.dtype, kernel_init=init, name=name)
    y = GroupNorm(self.groups, epsilon=1e-6, dtype=self.dtype)(x).reshape(n, h * w, c)
    q, k, v = dense("q")(y), dense("k")(y), dense("v")(y)
    weights = jax.nn.softmax(
      jnp.einsum("nqc,nkc->nqk", q, k).astype(jnp.float32) * c**-0.5, axis=-1
    )
    y = jnp.einsum("nqk,nkc->nqc", weights.astype(v.dtype), v)
    return x + dense("proj", _LAST)(y).reshape(n, h, w, c)


class CrossAttention(nn.Module):
  """Multi-head attention of the H * W positions (queries) to a context
  sequence (keys and values) whose invalid positions are masked, residual."""

  heads: int
  groups: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array, mask: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    if c % self.heads:
      raise ConfigError(f"model.heads={self.heads} does not divide the width {c}.")
    dense = lambda name, init=_DEFAULT: nn.Dense(c, dtype=self.dtype, kernel_init=init, name=name)
    y = GroupNorm(self.groups, epsilon=1e-6, dtype=self.dtype)(x).reshape(n, h * w, c)
    split = lambda z: z.reshape(z.shape[0], z.shape[1], self.heads, c // self.heads)
    context = context.astype(self.dtype)
    q, k, v = split(dense("q")(y)), split(dense("k")(context)), split(dense("v")(context))
    logits = jnp.einsum("nqhd,nkhd->nhqk", q, k).astype(jnp.float32) * (c // self.heads) ** -0.5
    logits = jnp.where(mask[:, None, None, :], logits, -1e30)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    y = jnp.einsum("nhqk,nkhd->nqhd", weights, v).reshape(n, h * w, c)
    return x + dense("proj", _LAST)(y).reshape(n, h, w, c)


def pixel_coordinates(n: int, size: int, dtype) -> jax.Array:
  """(n, size, size, 2): each pixel's column and row, scaled to [-1, 1] (CoordConv,
  Liu et al. 2018): the convolutions alone know a position only by its distance to the
  zero padding, which a caption's "top left" needs."""
  ramp = jnp.linspace(-1.0, 1.0, size, dtype=dtype)
  grid = jnp.stack(jnp.meshgrid(ramp, ramp, indexing="xy"), axis=-1)
  return jnp.broadcast_to(grid, (n, size, size, 2))


def masked_mean(context: jax.Array, mask: jax.Array) -> jax.Array:
  """(N, L, D) -> (N, D): the mean over the valid positions (at least one per row)."""
  weights = mask.astype(jnp.float32)[..., None]
  return jnp.sum(context * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


class UNet(nn.Module):
  """(x_t (N, H, W, C), t (N,) [, labels (N,)]) -> (N, H, W, C): the predicted
  noise (or v). Labels equal to `num_classes` mean "unconditional"."""

  channels: int = 128
  channel_mults: tuple[int, ...] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attention_resolutions: tuple[int, ...] = (16,)
  dropout: float = 0.1
  num_classes: int | None = None
  groups: int = 32
  cross_attention_resolutions: tuple[int, ...] = ()
  heads: int = 4  # Of the cross-attention.
  coordinates: bool = False  # Append each pixel's (x, y) in [-1, 1] to the input channels.
  axis_name: str | None = parallel.AXIS
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    t: jax.Array,
    labels: jax.Array | None = None,
    train: bool = False,
    context: jax.Array | None = None,
    context_mask: jax.Array | None = None,
  ) -> jax.Array:
    out_channels, size = x.shape[-1], x.shape[1]
    emb_dim = 4 * self.channels
    emb = timestep_embedding(t, self.channels)
    emb = nn.Dense(emb_dim, kernel_init=_DEFAULT)(emb)
    emb = nn.Dense(emb_dim, kernel_init=_DEFAULT)(nn.swish(emb))
    if self.num_classes is not None:
      if labels is None:
        labels = jnp.full((x.shape[0],), self.num_classes, jnp.int32)
      emb = emb + nn.Embed(self.num_classes + 1, emb_dim, name="class_embedding")(labels)
    if context is not None:
      pooled = masked_mean(context.astype(jnp.float32), context_mask)
      emb = emb + nn.Dense(emb_dim, kernel_init=_DEFAULT, name="context_embedding")(pooled)
    emb = emb.astype(self.dtype)

    block = lambda c: ResBlock(c, self.dropout, self.groups, self.axis_name, self.dtype)
    self_attention = lambda: AttentionBlock(self.groups, self.dtype)

    def attention(h, self_attend=True):
      if self_attend:
        h = self_attention()(h)
      if context is not None and h.shape[1] in self.cross_attention_resolutions:
        h = CrossAttention(self.heads, self.groups, self.dtype)(h, context, context_mask)
      return h

    conv = lambda c, **kw: Conv(c, (3, 3), dtype=self.dtype, kernel_init=_DEFAULT, **kw)

    if self.coordinates:
      x = jnp.concatenate([x, pixel_coordinates(x.shape[0], size, x.dtype)], axis=-1)
    h = conv(self.channels)(x.astype(self.dtype))
    skips = [h]
    for level, mult in enumerate(self.channel_mults):
      for _ in range(self.num_res_blocks):
        h = block(self.channels * mult)(h, emb, train)
        h = attention(h, h.shape[1] in self.attention_resolutions)
        skips.append(h)
      if level != len(self.channel_mults) - 1:
        h = conv(h.shape[-1], strides=(2, 2))(h)
        skips.append(h)

    h = block(h.shape[-1])(h, emb, train)
    h = attention(h)
    h = block(h.shape[-1])(h, emb, train)

    for level, mult in reversed(list(enumerate(self.channel_mults))):
      for _ in range(self.num_res_blocks + 1):
        h = block(self.channels * mult)(jnp.concatenate([h, skips.pop()], axis=-1), emb, train)
        h = attention(h, h.shape[1] in self.attention_resolutions)
      if level != 0:
        h = upsample_nearest_2x(h)
        h = conv(h.shape[-1])(h)
    assert not skips and h.shape[1] == size

    h = GroupNorm(self.groups, epsilon=1e-6, swish=True, dtype=self.dtype)(h)
    out = Conv(out_channels, (3, 3), dtype=self.dtype, kernel_init=_LAST)(h)
    return out.astype(jnp.float32)


def check_geometry(image_size: int, channel_mults, channels: int, groups: int) -> None:
  """A ConfigError unless every downsampling halves the size exactly and
  GroupNorm's groups divide every width."""
  size = image_size
  for _ in range(len(channel_mults) - 1):
    if size % 2:
      raise ConfigError(
        f"model.image_size {image_size} cannot be halved {len(channel_mults) - 1} times "
        f"(model.channel_mults {tuple(channel_mults)}); use fewer levels or a size such as 32."
      )
    size //= 2
  widths = sorted({channels * m for m in channel_mults} | {channels})
  bad = [w for w in widths if w % groups]
  if bad:
    raise ConfigError(
      f"model.norm_groups={groups} does not divide the widths {bad}; use a divisor of {channels}."
    )
