"""Spatial GAN for texture synthesis (Jetchev, Bergmann & Vollgraf 2016).

arXiv:1611.08207. A fully convolutional generator maps a spatial noise tensor
(N, h, w, noise_channels) to an image 2**num_up times larger, so one trained
network makes textures of any multiple of 2**num_up in one call; a fully
convolutional discriminator scores every position of a map over random
crops of the exemplar (SGAN's per-position loss: the GAN losses average it).

Layers are DCGAN's 4x4 stride-2 (transposed) convolutions with BatchNorm and
(leaky) ReLU; `upsample='nearest'` doubles G's maps by repetition and a 3x3
convolution instead (Odena et al. 2016, which avoids checkerboard patterns).

With `padding='wrap'` every generator layer works on a torus:
the input is padded circularly by one pixel, the transposed convolution is
computed, and the 2-pixel rim it adds on each side is cut off, which is
exactly the transposed convolution with indices taken modulo the output size.
Such a generator is translation-equivariant on the torus, so its output tiles
without a seam at any size (the periodic textures of Bergmann et al. 2017,
PSGAN, arXiv:1705.06566, are tileable by a learned periodic noise instead;
this is the exact, simpler construction). `padding='zero'` is the paper's.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from imgen.core.errors import ConfigError
from imgen.models.gan_layers import Norm
from imgen.models.layers import Conv
from imgen.models.layers import Conv4x4S2
from imgen.models.layers import ConvTranspose4x4S2
from imgen.models.layers import upsample_nearest_2x

PADDINGS = ("wrap", "zero")
UPSAMPLES = ("subpixel", "transpose", "nearest")  # G's; D downsamples by 4x4 stride 2.
_init = nn.initializers.normal(0.02)


def _bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def noise_size(image_size: int, num_up: int) -> int:
  """The side of the noise tensor for `image_size` outputs; a ConfigError if it does not divide."""
  factor = 2**num_up
  if image_size % factor or image_size < factor:
    raise ConfigError(
      f"model.image_size {image_size} must be a multiple of 2**num_up = {factor} for a spatial GAN."
    )
  return image_size // factor


class Generator(nn.Module):
  """Noise (N, h, w, noise_channels), or its flattening (N, h*w*noise_channels)
  at the training size -> images (N, h * 2**(len(widths) + 1), ..., channels) in [-1, 1]."""

  image_size: int
  channels: int
  widths: tuple[int, ...] = (256, 128, 64)
  noise_channels: int = 16
  padding: str = "wrap"
  upsample: str = "subpixel"
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32
  norm_momentum: float = 0.9
  num_classes: None = None  # The GAN family's interface; a texture GAN is unconditional.

  @property
  def num_up(self) -> int:
    return len(self.widths) + 1

  @property
  def latent_dim(self) -> int:
    """Flat noise size at `image_size`: what the GAN family draws."""
    side = noise_size(self.image_size, self.num_up)
    return side * side * self.noise_channels

  def _up(self, x: jax.Array, features: int) -> jax.Array:
    if self.upsample == "nearest":  # Odena et al. 2016: no checkerboard.
      x = upsample_nearest_2x(x)
      mode = "wrap" if self.padding == "wrap" else "constant"
      x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode=mode)
      return Conv(features, (3, 3), padding="VALID", kernel_init=_init, dtype=self.dtype)(x)
    layer = ConvTranspose4x4S2(features, self.upsample, dtype=self.dtype)
    if self.padding == "zero":
      return layer(x)
    return layer(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap"))[:, 2:-2, 2:-2]

  @nn.compact
  def __call__(self, z: jax.Array, labels: None = None, train: bool = True) -> jax.Array:
    del labels
    if self.padding not in PADDINGS:
      raise ConfigError(f"model.padding {self.padding!r}; use one of {PADDINGS}.")
    if self.upsample not in UPSAMPLES:
      raise ConfigError(
        f"model.upsample {self.upsample!r}; a spatial GAN takes one of {UPSAMPLES}."
      )
    if z.ndim == 2:
      side = noise_size(self.image_size, self.num_up)
      z = z.reshape(z.shape[0], side, side, self.noise_channels)
    x = z.astype(self.dtype)
    for i, features in enumerate(self.widths):
      x = self._up(x, features)
      norm = Norm(
        None,
        self.axis_name,
        self.dtype,
        _bn_scale_init,
        momentum=self.norm_momentum,
        name=f"_Norm_{i}",
      )
      x = nn.relu(norm(x, None, train))
    return jnp.tanh(self._up(x, self.channels).astype(jnp.float32))


class Discriminator(nn.Module):
  """Images (N, S, S, C) -> a map of logits (N, S / 2**len(widths), ...) of 'real'."""

  widths: tuple[int, ...] = (32, 64, 128, 256)
  norm: str = "batch"
  downsample: str = "subpixel"
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, labels: None = None, train: bool = True) -> jax.Array:
    del labels
    bias = self.norm != "batch"
    for i, features in enumerate(self.widths):
      x = Conv4x4S2(features, self.downsample, _init, use_bias=bias, dtype=self.dtype)(x)
      if i and self.norm == "batch":
        x = Norm(None, self.axis_name, self.dtype, _bn_scale_init, name=f"_Norm_{i - 1}")(
          x, None, train
        )
      elif i and self.norm == "layer":
        x = nn.LayerNorm(reduction_axes=(1, 2, 3), dtype=self.dtype)(x)
      x = nn.leaky_relu(x, 0.2)
    logits = Conv(1, (1, 1), kernel_init=_init, dtype=self.dtype)(x)
    return logits[..., 0].astype(jnp.float32)
