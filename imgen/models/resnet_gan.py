"""The ResNet generator and discriminator of SNGAN and WGAN-GP.

Miyato, Kataoka, Koyama & Yoshida, "Spectral Normalization for Generative
Adversarial Networks", ICLR 2018 (arXiv:1802.05957), Appendix B.4: Table 4
(CIFAR-10, 32x32) and Table 5 (STL-10, 48x48), after the ResNet of Gulrajani
et al. (2017, WGAN-GP). Block internals follow the authors' released code
(pfnet-research/sngan_projection), which the paper does not spell out:

- Generator block: BN, ReLU, 2x nearest upsampling, 3x3 conv, BN, ReLU, 3x3
  conv (hidden width = output width); shortcut: upsampling and a 1x1 conv.
- Discriminator block: ReLU, 3x3 conv, ReLU, 3x3 conv (hidden width = input
  width), then 2x2 average pooling when it downsamples; shortcut: 1x1 conv,
  then the pooling. The first block ("optimized") has no leading ReLU and
  pools its input before the shortcut's 1x1 conv.
- A shortcut has a 1x1 conv only when the block changes the width or the
  resolution; otherwise it is the identity.
- Generator: dense z -> base x base x `g_channels[0]`, one up block per
  further entry of `g_channels`, BN, ReLU, 3x3 conv to the image, tanh.
- Discriminator: blocks of widths `d_channels` (downsampling where
  `d_downsample` says so), ReLU, global *sum* pooling, dense to one logit
  without bias (plus the projection term when conditional). WGAN-GP's critic
  (igul222/improved_wgan_training, gan_cifar_resnet.py) averages instead and
  its dense layer has a bias (`pool="mean"`).
- Initialisation: Glorot-uniform with gain sqrt(2) for the 3x3 convs of the
  blocks, gain 1 for the shortcuts, the dense layers, G's output conv and the
  class embedding.

Class-conditional (`num_classes`): conditional BatchNorm in G's blocks and a
projection discriminator (Miyato & Koyama 2018). `spectral_norm` normalises
every layer of D (SNGAN); WGAN-GP's critic has neither it nor BatchNorm.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from imgen.core.errors import ConfigError
from imgen.models.gan_layers import Norm
from imgen.models.gan_layers import Projection
from imgen.models.gan_layers import spectral
from imgen.models.layers import Conv
from imgen.models.layers import upsample_nearest_2x

_glorot = nn.initializers.xavier_uniform()
_glorot_relu = nn.initializers.variance_scaling(2.0, "fan_avg", "uniform")  # gain sqrt(2)


def _downsample(x: jax.Array) -> jax.Array:
  """2x2 average pooling."""
  return nn.avg_pool(x, (2, 2), (2, 2))


def base_size(image_size: int, num_up: int) -> int:
  """The generator's first resolution: image_size / 2**num_up."""
  base = image_size // 2**num_up
  if base < 1 or base * 2**num_up != image_size:
    raise ConfigError(
      f"model.image_size {image_size} is not a multiple of 2**{num_up}, as the ResNet "
      f"generator's {num_up} upsampling blocks (model.g_channels) need."
    )
  return base


class GeneratorBlock(nn.Module):
  features: int
  num_classes: int | None
  axis_name: str | None
  dtype: jnp.dtype
  norm_momentum: float = 0.9

  @nn.compact
  def __call__(self, x, labels, train: bool):
    norm = functools.partial(
      Norm, self.num_classes, self.axis_name, self.dtype, momentum=self.norm_momentum
    )
    conv = functools.partial(
      nn.Conv, self.features, (3, 3), kernel_init=_glorot_relu, dtype=self.dtype
    )
    h = nn.relu(norm()(x, labels, train))
    h = conv()(upsample_nearest_2x(h))
    h = nn.relu(norm()(h, labels, train))
    h = conv()(h)
    shortcut = Conv(self.features, (1, 1), kernel_init=_glorot, dtype=self.dtype)(
      upsample_nearest_2x(x)
    )
    return h + shortcut


class DiscriminatorBlock(nn.Module):
  features: int
  downsample: bool
  first: bool  # The "optimized" first block: no leading ReLU, pooled shortcut input.
  spectral_norm: bool
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x, train: bool):
    sn = lambda layer: spectral(layer, self.spectral_norm, train)
    hidden = self.features if self.first else x.shape[-1]
    conv = lambda n: sn(Conv(n, (3, 3), kernel_init=_glorot_relu, dtype=self.dtype))
    h = x if self.first else nn.relu(x)
    h = conv(hidden)(h)
    h = conv(self.features)(nn.relu(h))
    if self.downsample:
      h = _downsample(h)
    shortcut = x
    if self.first:
      shortcut = sn(Conv(self.features, (1, 1), kernel_init=_glorot, dtype=self.dtype))(
        _downsample(x)
      )
    elif self.downsample or x.shape[-1] != self.features:
      shortcut = sn(Conv(self.features, (1, 1), kernel_init=_glorot, dtype=self.dtype))(x)
      if self.downsample:
        shortcut = _downsample(shortcut)
    return h + shortcut


class Generator(nn.Module):
  """z (N, latent_dim) [and labels (N,)] -> images (N, S, S, channels) in [-1, 1].

  `norm_momentum`: the momentum of its BatchNorms' running averages."""

  image_size: int
  channels: int
  widths: tuple[int, ...] = (256, 256, 256, 256)  # Dense width, then each up block's.
  num_classes: int | None = None
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32
  norm_momentum: float = 0.9

  def __post_init__(self):
    """Checks that the up blocks make the image size when built, before anything compiles."""
    super().__post_init__()
    base_size(self.image_size, len(self.widths) - 1)

  @nn.compact
  def __call__(self, z: jax.Array, labels: jax.Array | None = None, train: bool = True):
    base = base_size(self.image_size, len(self.widths) - 1)
    x = nn.Dense(base * base * self.widths[0], kernel_init=_glorot, dtype=self.dtype)(z)
    x = x.reshape(-1, base, base, self.widths[0])
    for width in self.widths[1:]:
      block = GeneratorBlock(
        width, self.num_classes, self.axis_name, self.dtype, self.norm_momentum
      )
      x = block(x, labels, train)
    x = nn.relu(Norm(None, self.axis_name, self.dtype, momentum=self.norm_momentum)(x, None, train))
    x = Conv(self.channels, (3, 3), kernel_init=_glorot, dtype=self.dtype)(x)
    return jnp.tanh(x.astype(jnp.float32))


class Discriminator(nn.Module):
  """images (N, S, S, C) [and labels (N,)] -> logits (N,)."""

  image_size: int
  widths: tuple[int, ...] = (128, 128, 128, 128)
  downsample: tuple[bool, ...] = (True, True, False, False)
  num_classes: int | None = None
  spectral_norm: bool = True
  pool: str = "sum"  # SNGAN sums the last features over space; WGAN-GP's critic averages.
  dtype: jnp.dtype = jnp.float32

  def __post_init__(self):
    """Checks the blocks against the image size when built, before anything compiles."""
    super().__post_init__()
    if self.pool not in ("sum", "mean"):
      raise ConfigError(f"model.d_pool {self.pool!r}; use 'sum' or 'mean'.")
    if len(self.downsample) != len(self.widths):
      raise ConfigError(
        f"model.d_downsample has {len(self.downsample)} entries for {len(self.widths)} "
        "discriminator blocks (model.d_channels)."
      )
    if self.image_size % 2 ** sum(self.downsample):
      raise ConfigError(
        f"model.image_size {self.image_size} cannot be halved {sum(self.downsample)} times "
        "(model.d_downsample)."
      )

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array | None = None, train: bool = True):
    for i, (width, down) in enumerate(zip(self.widths, self.downsample, strict=True)):
      x = DiscriminatorBlock(width, bool(down), i == 0, self.spectral_norm, self.dtype)(x, train)
    pool = jnp.sum if self.pool == "sum" else jnp.mean
    h = pool(nn.relu(x).astype(jnp.float32), axis=(1, 2))
    dense = nn.Dense(1, use_bias=self.pool == "mean", kernel_init=_glorot)
    logits = spectral(dense, self.spectral_norm, train)(h)[:, 0]
    if self.num_classes is not None:
      logits = logits + Projection(self.num_classes, self.spectral_norm, _glorot)(h, labels, train)
    return logits
