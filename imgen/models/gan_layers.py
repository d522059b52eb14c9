"""Pieces the GAN networks share: (conditional) BatchNorm, spectral
normalisation, and the projection discriminator's class term.

- `Norm`: BatchNorm synchronised over the device axis when training (its
  running averages with `momentum`; 0 keeps the last batch's statistics); with
  `num_classes` it is conditional BatchNorm (de Vries et al. 2017, Dumoulin et
  al. 2017), with a gain and a bias per class instead of one per channel, as
  in the class-conditional generators of Miyato & Koyama (2018).
- `spectral(layer, enabled, train)`: the layer with its kernel divided by its
  largest singular value (Miyato et al. 2018), estimated by one power
  iteration per training call (flax's `nn.SpectralNorm`). The iteration's
  vector `u` lives in the `batch_stats` collection, so it is part of the train
  state and its checkpoints: a resumed run continues the same iteration.
- `Projection`: the projection discriminator's term <embed(y), h> for class
  `y` and D's pooled features `h` (Miyato & Koyama 2018, eq. 3).
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def spectral(layer: nn.Module, enabled: bool, train: bool) -> Callable:
  """`layer`, spectrally normalised when `enabled` (the estimate updated when `train`)."""
  if not enabled:
    return layer
  wrapped = nn.SpectralNorm(layer)
  return lambda *args: wrapped(*args, update_stats=train)


class Norm(nn.Module):
  """BatchNorm (conditional on `labels` when `num_classes` is set)."""

  num_classes: int | None = None
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32
  scale_init: Callable = nn.initializers.ones
  epsilon: float = 1e-5
  momentum: float = 0.9  # PyTorch's 0.1 in flax's convention.

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array | None, train: bool) -> jax.Array:
    conditional = self.num_classes is not None
    x = nn.BatchNorm(
      use_running_average=not train,
      momentum=self.momentum,
      epsilon=self.epsilon,
      axis_name=self.axis_name if train else None,
      use_scale=not conditional,
      use_bias=not conditional,
      scale_init=self.scale_init,
      dtype=self.dtype,
    )(x)
    if not conditional:
      return x
    channels = x.shape[-1]
    gain = nn.Embed(self.num_classes, channels, embedding_init=_ones, name="gain")(labels)
    bias = nn.Embed(self.num_classes, channels, embedding_init=nn.initializers.zeros, name="bias")(
      labels
    )
    return x * gain[:, None, None, :].astype(x.dtype) + bias[:, None, None, :].astype(x.dtype)


def _ones(key, shape, dtype=jnp.float32):
  del key
  return jnp.ones(shape, dtype)


class Projection(nn.Module):
  """<embed(labels), features>: the class term of a projection discriminator."""

  num_classes: int
  spectral_norm: bool = False
  embedding_init: Callable = nn.initializers.xavier_uniform()

  @nn.compact
  def __call__(self, features: jax.Array, labels: jax.Array, train: bool) -> jax.Array:
    embed = nn.Embed(self.num_classes, features.shape[-1], embedding_init=self.embedding_init)
    e = spectral(embed, self.spectral_norm, train)(labels)
    return jnp.sum(e.astype(jnp.float32) * features.astype(jnp.float32), axis=-1)
