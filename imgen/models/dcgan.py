"""DCGAN generator and discriminator (Radford, Metz & Chintala, 2016).

arXiv:1511.06434. The generator projects z to a `base` x `base` map, then
doubles the resolution `num_up` times with stride-2 4x4 transposed
convolutions, halving the width each time (BatchNorm + ReLU, tanh output).
The discriminator mirrors it with stride-2 4x4 convolutions (LeakyReLU 0.2,
BatchNorm after the first), then a `base` x `base` valid convolution to one
logit. Weights start from N(0, 0.02), BatchNorm scales from N(1, 0.02), as in
the paper. For 64x64 and width 64 this is the paper's network exactly
(G 3,576,704 and D 2,765,568 parameters, as in the PyTorch DCGAN tutorial).
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
from imgen.models.layers import Conv4x4S2
from imgen.models.layers import ConvTranspose4x4S2

D_NORMS = ("batch", "layer", "none")  # The discriminator's normalisation (model.d_norm).

_init = nn.initializers.normal(0.02)


def _bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def geometry(image_size: int, model: str = "DCGAN") -> tuple[int, int]:
  """(base, num_up) with image_size = base * 2**num_up and 4 <= base <= 7;
  `model` names the network in the error for other sizes."""
  base, num_up = image_size, 0
  while base % 2 == 0 and base > 7:
    base //= 2
    num_up += 1
  if num_up < 1 or not 4 <= base <= 7:
    raise ConfigError(
      f"model.image_size {image_size} cannot be made by {model}: it needs "
      f"base * 2**k with base in 4..7 and k >= 1 (e.g. 8, 16, 28, 32, 64, 128)."
    )
  return base, num_up


class Generator(nn.Module):
  """z (N, latent_dim) [and labels (N,)] -> images (N, image_size, image_size, channels) in [-1, 1].

  With `num_classes`, its BatchNorms are conditional on the labels;
  `norm_momentum` is their running averages' momentum."""

  image_size: int
  channels: int
  width: int = 64
  upsample: str = "subpixel"
  num_classes: int | None = None
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32
  norm_momentum: float = 0.9

  @nn.compact
  def __call__(self, z: jax.Array, labels: jax.Array | None = None, train: bool = True):
    base, num_up = geometry(self.image_size)
    # Named as before conditional BatchNorm existed, so older checkpoints still load.
    norms = (f"_Norm_{i}" for i in range(num_up))
    norm = lambda: Norm(
      self.num_classes,
      self.axis_name,
      self.dtype,
      _bn_scale_init,
      momentum=self.norm_momentum,
      name=next(norms),
    )
    features = self.width * 2 ** (num_up - 1)
    # A 1x1 -> base x base transposed convolution is this dense layer.
    x = nn.Dense(base * base * features, use_bias=False, kernel_init=_init, dtype=self.dtype)(z)
    x = x.reshape(-1, base, base, features)
    x = nn.relu(norm()(x, labels, train))
    for _ in range(num_up - 1):
      features //= 2
      x = ConvTranspose4x4S2(features, self.upsample, dtype=self.dtype)(x)
      x = nn.relu(norm()(x, labels, train))
    x = ConvTranspose4x4S2(self.channels, self.upsample, dtype=self.dtype)(x)
    return jnp.tanh(x.astype(jnp.float32))


class Discriminator(nn.Module):
  """images (N, S, S, C) [and labels (N,)] -> logits (N,) of 'real'.

  `norm` after each convolution but the first: the paper's BatchNorm,
  LayerNorm over each image's features (the critic of WGAN-GP, whose penalty
  needs every image's logit independent of the others), or none.
  `spectral_norm` normalises every convolution (Miyato et al. 2018). With
  `num_classes`, the logit gains the projection term of the labels on the
  last features (Miyato & Koyama 2018): all of the last map, flattened, as the
  head sees it.
  """

  image_size: int
  width: int = 64
  downsample: str = "subpixel"
  norm: str = "batch"
  spectral_norm: bool = False
  num_classes: int | None = None
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32

  def __post_init__(self):
    """Checks the normalisation when built, before anything compiles."""
    super().__post_init__()
    if self.norm not in D_NORMS:
      raise ConfigError(f"model.d_norm {self.norm!r}; use one of {D_NORMS}.")

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array | None = None, train: bool = True):
    base, num_down = geometry(self.image_size)
    # Named as flax names nn.Conv layers, so parameters and their initial values
    # match those of a plain nn.Conv discriminator.
    # Without BatchNorm to follow them, the layers get biases: a bias-free D of
    # leaky ReLUs is positively homogeneous, D(a x) = a D(x), so the grey image
    # x = 0 scores 0 whatever D learns, and a conditional G collapses onto it.
    bias = self.norm != "batch"
    conv = functools.partial(
      Conv4x4S2, impl=self.downsample, kernel_init=_init, use_bias=bias, dtype=self.dtype
    )
    sn = lambda layer: spectral(layer, self.spectral_norm, train)
    x = nn.leaky_relu(sn(conv(self.width, name="Conv_0"))(x), 0.2)
    for i in range(1, num_down):
      x = sn(conv(self.width * 2**i, name=f"Conv_{i}"))(x)
      if self.norm == "batch":
        x = Norm(None, self.axis_name, self.dtype, _bn_scale_init, name=f"_Norm_{i - 1}")(
          x, None, train
        )
      elif self.norm == "layer":
        x = nn.LayerNorm(reduction_axes=(1, 2, 3), dtype=self.dtype)(x)
      x = nn.leaky_relu(x, 0.2)
    last = Conv(
      1,
      (base, base),
      padding="VALID",
      use_bias=bias,
      kernel_init=_init,
      dtype=self.dtype,
      name=f"Conv_{num_down}",
    )
    logits = sn(last)(x).reshape(x.shape[0]).astype(jnp.float32)
    if self.num_classes is not None:
      # The head is linear in all of the last map, so the class term projects
      # all of it too: summed over space instead, it would start ~20x larger
      # than the head's logit and drown it.
      features = x.reshape(x.shape[0], -1)
      logits = logits + Projection(self.num_classes, self.spectral_norm)(features, labels, train)
    return logits
