"""Image classifiers: the seed's small CNN and a small ResNet.

Both return logits, or with `features=True` the pair (penultimate-layer
features, logits), so a trained classifier doubles as the in-domain feature
network for sample-quality metrics. Under pmap (`axis_name` set) BatchNorm
statistics are synchronised across devices and dropout masks are drawn for the
global batch, so a run computes the same on any number of devices.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from imgen.core.parallel import global_draw
from imgen.models.layers import Conv
from imgen.models.layers import max_pool_2x2


def _norm(train: bool, axis_name: str | None, dtype: jnp.dtype):
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=0.9,
    axis_name=axis_name if train else None,
    dtype=dtype,
  )


class Dropout(nn.Module):
  """Inverted dropout (as `nn.Dropout`) whose mask is this replica's rows of
  one mask drawn for the global batch over `axis_name`."""

  rate: float
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0:
      return x
    keep = 1.0 - self.rate
    draw = lambda key, shape: jax.random.bernoulli(key, keep, shape)
    key = self.make_rng("dropout")
    if self.axis_name is None:
      mask = draw(key, x.shape)
    else:
      mask = global_draw(draw, key, x.shape[0], x.shape[1:], self.axis_name)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def _outputs(penultimate: jax.Array, logits: jax.Array, features: bool):
  """float32 logits, or (features, logits), whatever the compute dtype."""
  logits = logits.astype(jnp.float32)
  return (penultimate.astype(jnp.float32), logits) if features else logits


class SimpleCNN(nn.Module):
  """(conv-BN-ReLU x2, max-pool) x2, dense-ReLU-dropout, dense to logits."""

  num_classes: int = 10
  width: int = 32
  dropout: float = 0.3
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, features: bool = False):
    for i in range(2):
      for _ in range(2):
        x = Conv(self.width * 2**i, (3, 3), use_bias=False, dtype=self.dtype)(x)
        x = nn.relu(_norm(train, self.axis_name, self.dtype)(x))
      x = max_pool_2x2(x)
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    penultimate = nn.relu(dense(4 * self.width)(x.reshape(x.shape[0], -1)))
    x = Dropout(self.dropout, self.axis_name)(penultimate, deterministic=not train)
    return _outputs(penultimate, dense(self.num_classes)(x), features)


class _Block(nn.Module):
  features: int
  stride: int
  axis_name: str | None
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x, train):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    norm = lambda: _norm(train, self.axis_name, self.dtype)
    y = nn.relu(norm()(conv(self.features, (3, 3), self.stride)(x)))
    y = norm()(conv(self.features, (3, 3))(y))
    if x.shape != y.shape:
      x = norm()(conv(self.features, (1, 1), self.stride)(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """A ResNet of basic blocks (He et al., 2016), three stages, global pooling."""

  num_classes: int = 10
  width: int = 16
  blocks_per_stage: int = 2
  dropout: float = 0.0
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, features: bool = False):
    x = Conv(self.width, (3, 3), use_bias=False, dtype=self.dtype)(x)
    x = nn.relu(_norm(train, self.axis_name, self.dtype)(x))
    for stage in range(3):
      for block in range(self.blocks_per_stage):
        stride = 2 if stage > 0 and block == 0 else 1
        x = _Block(self.width * 2**stage, stride, self.axis_name, self.dtype)(x, train)
    penultimate = x.mean(axis=(1, 2))
    x = Dropout(self.dropout, self.axis_name)(penultimate, deterministic=not train)
    return _outputs(penultimate, nn.Dense(self.num_classes, dtype=self.dtype)(x), features)


CLASSIFIERS = {"simple": SimpleCNN, "resnet": ResNet}
