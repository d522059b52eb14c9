"""The segmentation U-Net of Ronneberger, Fischer & Brox (2015).

A contracting path of `depth` levels, each two 3x3 convolutions (normalised,
ReLU) and a 2x2 max-pool, doubling the channels from `width`; a bottom level
of two convolutions; an expanding path that doubles the resolution with a 2x2
stride-2 transposed convolution (halving the channels), concatenates the
contracting path's features of that resolution (the skip connection) and
applies two 3x3 convolutions; a 1x1 convolution to per-pixel class logits.
As in most later U-Nets the convolutions are 'same'-padded (the paper's are
unpadded, with cropped skips and a larger input tile), so the logits have the
input's height and width, which must be divisible by 2**depth.

`mults` sets each level's channels as multiples of `width`, the bottom level's
last (depth + 1 entries); empty, they double per level as in the paper. Wide
low levels are cheap: a level has a quarter of the pixels of the one above.

`aux_heads` adds a 1x1 convolution to class logits after each expanding level
below the full resolution, sown as `intermediates/aux_<level>` (level l: 1/2**l of
the input's side): deep supervision (Lee et al. 2015), trained by the family
against the masks' class fractions per cell; inference leaves them out.

`norm`: 'batch' (synchronised over `axis_name` when training, running
averages otherwise), 'group' (8 groups, or fewer for narrow layers) or
'none' (biases instead).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from imgen.models.layers import Conv
from imgen.models.layers import max_pool_2x2
from imgen.models.norms import BatchNorm

NORMS = ("batch", "group", "none")


class UpConv2x2(nn.Module):
  """`nn.ConvTranspose(features, (2, 2), (2, 2))` written as what it is: each
  input pixel times the kernel gives its 2x2 output block, one matrix product
  and a depth-to-space. XLA lowers the transposed convolution's gradients to
  convolutions of a dilated input, slow on CPU; this form has none. The kernel
  is nn.ConvTranspose's (2, 2, in, out), whose tap (a, b) lands on output
  (2i + 1 - a, 2j + 1 - b), so the two are interchangeable.
  """

  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (2, 2, x.shape[-1], self.features), jnp.float32
    )
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    n, h, w, _ = x.shape
    y = jnp.einsum("nhwc,abco->nhawbo", x, kernel[::-1, ::-1])
    return y.reshape(n, 2 * h, 2 * w, self.features) + bias


class _ConvBlock(nn.Module):
  """Two (3x3 convolution, normalisation, ReLU)."""

  features: int
  norm: str
  axis_name: str | None
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for _ in range(2):
      x = Conv(self.features, (3, 3), use_bias=self.norm == "none", dtype=self.dtype)(x)
      if self.norm == "batch":  # With its ReLU: one pass each way (imgen.models.norms).
        x = BatchNorm(
          use_running_average=not train,
          momentum=0.9,
          axis_name=self.axis_name if train else None,
          relu=True,
          dtype=self.dtype,
        )(x)
        continue
      if self.norm == "group":
        x = nn.GroupNorm(num_groups=min(8, self.features), dtype=self.dtype)(x)
      x = nn.relu(x)
    return x


class SegUNet(nn.Module):
  """Images (N, H, W, C) in [-1, 1] -> float32 logits (N, H, W, num_classes)."""

  num_classes: int
  depth: int = 3
  width: int = 16
  mults: tuple[int, ...] = ()
  aux_heads: bool = False
  norm: str = "batch"
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    block = functools.partial(
      _ConvBlock, norm=self.norm, axis_name=self.axis_name, dtype=self.dtype
    )
    mults = self.mults or tuple(2**level for level in range(self.depth + 1))
    assert len(mults) == self.depth + 1, (mults, self.depth)
    features = [self.width * m for m in mults]
    skips = []
    for level in range(self.depth):
      x = block(features[level])(x, train)
      skips.append(x)
      x = max_pool_2x2(x)
    x = block(features[self.depth])(x, train)
    for level in reversed(range(self.depth)):
      x = UpConv2x2(features[level], dtype=self.dtype)(x)
      x = jnp.concatenate([skips[level], x], axis=-1)
      x = block(features[level])(x, train)
      if self.aux_heads and level > 0:
        aux = Conv(self.num_classes, (1, 1), dtype=self.dtype, name=f"aux_head_{level}")(x)
        self.sow("intermediates", f"aux_{level}", aux.astype(jnp.float32))
    return Conv(self.num_classes, (1, 1), dtype=self.dtype)(x).astype(jnp.float32)
