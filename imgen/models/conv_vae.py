"""Convolutional VAE encoder and decoder (Kingma & Welling, 2014; arXiv:1312.6114).

The encoder halves the resolution with stride-2 4x4 convolutions down to a
`base` x `base` map (the DCGAN geometry) and outputs the mean and log-variance
of a diagonal Gaussian posterior. The decoder mirrors it with the exact
sub-pixel transposed convolutions and outputs per-pixel parameters: Bernoulli
logits, or Gaussian means in [-1, 1].
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from imgen.models.dcgan import geometry
from imgen.models.layers import Conv4x4S2
from imgen.models.layers import ConvTranspose4x4S2


class Encoder(nn.Module):
  """images (N, S, S, C) -> (mean, log_var), each (N, latent_dim)."""

  image_size: int
  latent_dim: int
  width: int = 32
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    _, num_down = geometry(self.image_size, "the conv VAE")
    for i in range(num_down):
      # nn.Conv(features, (4, 4), (2, 2), ((1, 1), (1, 1))) with its parameters'
      # names and initial values, and gradients in the forms fast on CPU.
      conv = Conv4x4S2(
        self.width * 2**i,
        kernel_init=nn.initializers.lecun_normal(),
        use_bias=True,
        dtype=self.dtype,
        name=f"Conv_{i}",
      )
      x = nn.relu(conv(x))
    x = nn.relu(nn.Dense(16 * self.width, dtype=self.dtype)(x.reshape(x.shape[0], -1)))
    out = nn.Dense(2 * self.latent_dim, dtype=self.dtype)(x).astype(jnp.float32)
    return out[:, : self.latent_dim], out[:, self.latent_dim :]


class Decoder(nn.Module):
  """z (N, latent_dim) -> per-pixel outputs (N, S, S, C)."""

  image_size: int
  channels: int
  width: int = 32
  upsample: str = "subpixel"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    base, num_up = geometry(self.image_size, "the conv VAE")
    features = self.width * 2 ** (num_up - 1)
    init = nn.initializers.lecun_normal()
    up = functools.partial(
      ConvTranspose4x4S2, impl=self.upsample, kernel_init=init, dtype=self.dtype
    )
    x = nn.relu(nn.Dense(16 * self.width, dtype=self.dtype)(z))
    x = nn.relu(nn.Dense(base * base * features, dtype=self.dtype)(x))
    x = x.reshape(-1, base, base, features)
    for _ in range(num_up - 1):
      features //= 2
      x = nn.relu(up(features)(x))
    x = up(self.channels)(x).astype(jnp.float32)
    bias = self.param("out_bias", nn.initializers.zeros, (self.channels,))
    return x + bias


class VAE(nn.Module):
  """Encoder + decoder; `log_scale` is the Gaussian likelihood's per-channel log std."""

  image_size: int
  channels: int
  latent_dim: int = 16
  width: int = 32
  upsample: str = "subpixel"
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.encoder = Encoder(self.image_size, self.latent_dim, self.width, self.dtype)
    self.decoder = Decoder(self.image_size, self.channels, self.width, self.upsample, self.dtype)
    self.log_scale = self.param("log_scale", nn.initializers.constant(-2.0), (self.channels,))

  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Encodes and decodes with z = mean (for init); training samples z itself."""
    del train
    mean, log_var = self.encoder(x)
    return self.decoder(mean), mean, log_var

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.encoder(x)

  def decode(self, z: jax.Array) -> jax.Array:
    return self.decoder(z)

  def scale(self) -> jax.Array:
    return jnp.exp(self.log_scale)
