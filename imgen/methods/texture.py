"""Texture statistics and texture synthesis by optimisation (Gatys et al. 2015).

A texture is summarised by the Gram matrices of a convolutional network's
feature maps: G_l = F_l^T F_l / P_l for the P_l positions of level l, so
images of different sizes compare directly. `synthesize` optimises the
pixels of an image to match an exemplar's Gram matrices (optax L-BFGS or
Adam), coarse to fine: the exemplar and the image are halved `scales - 1`
times, the coarsest image starts as noise, and each result, upsampled,
starts the next scale.

No pretrained VGG can be downloaded here. Ustyuzhaninov et al. (2017,
arXiv:1606.00021) found that single-layer networks of random filters at
several scales synthesise textures close to Gatys' VGG results;
`RandomFeatures` is such a network made cheap: at each level of an image
pyramid (2x2 average pooling) it convolves with random zero-mean, unit-norm
filters of a few sizes (VALID, so no padding enters the statistics), takes
ReLUs, and appends the pixels and a constant, so the Gram matrix also holds
the pixels' means and second moments. `cnn_features` reads the conv layers of
the project's trained classifier instead (`cnn_features`: its 3x3 layers as
VALID convolutions with their BatchNorm and ReLU, 2x2 average pooling between
blocks where the classifier max-pools).

Scores that neither synthesiser optimised use a second random network with
other filters and seed: the relative Gram distance and the single-image FID
(SIFID, Shaham et al. 2019: the Frechet distance between Gaussians fitted to
the per-position features of one layer, here the held-out network's finest
level). `seam_ratio` is the mean absolute difference across the wrap-around
edges over that between neighbouring pixels inside: about 1 for images that
tile without a seam.
"""

from collections.abc import Callable
import dataclasses
import functools

import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from imgen.core.errors import ConfigError
from imgen.methods import metrics

# (images (N, H, W, C), the smaller side of the images compared) -> per level (N, h, w, D).
Features = Callable[[jax.Array, int | None], list[jax.Array]]
_DIMS = ("NHWC", "HWIO", "NHWC")


def gram(features: jax.Array) -> jax.Array:
  """(N, h, w, D) feature maps -> (N, D, D) Gram matrices, averaged over the positions."""
  n, h, w, d = features.shape
  f = features.reshape(n, h * w, d)
  return jnp.einsum("npi,npj->nij", f, f, preferred_element_type=jnp.float32) / (h * w)


def avg_pool2(x: jax.Array) -> jax.Array:
  """2x2 average pooling of (N, H, W, C); an odd last row or column is dropped."""
  n, h, w, c = x.shape
  x = x[:, : h // 2 * 2, : w // 2 * 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def parse_sizes(text: str, name: str) -> tuple[int, ...]:
  try:
    sizes = tuple(int(s) for s in str(text).split(",") if s.strip())
  except ValueError:
    sizes = ()
  if not sizes or min(sizes) < 1:
    raise ConfigError(f"{name}={text!r}; use comma-separated positive sizes, e.g. '3,5,7'.")
  return sizes


@dataclasses.dataclass(frozen=True)
class RandomFeatures:
  """Random multi-scale features: per pyramid level, ReLUs of random filters of
  each size, then the pixels and a constant. `plan(side)` names the (level,
  filter) pairs that fit images whose smaller side is `side` (a filter needs
  twice its size)."""

  kernels: tuple[jax.Array, ...]  # (k, k, C, channels) each.
  levels: int

  @classmethod
  def create(cls, config: ml_collections.ConfigDict, channels: int, name: str) -> "RandomFeatures":
    sizes = parse_sizes(config.kernel_sizes, f"{name}.kernel_sizes")
    if any(k % 2 == 0 for k in sizes):
      raise ConfigError(
        f"{name}.kernel_sizes={config.kernel_sizes!r}: use odd sizes (centred filters)."
      )
    if config.channels < 1 or config.levels < 1:
      raise ConfigError(f"{name}.channels and {name}.levels must be positive.")
    keys = jax.random.split(jax.random.key(config.seed), len(sizes))
    kernels = []
    for key, k in zip(keys, sizes, strict=True):
      w = jax.random.normal(key, (k, k, channels, config.channels))
      w = w - w.mean(axis=(0, 1, 2), keepdims=True)  # Blind to the mean: the pixels carry it.
      kernels.append(w / jnp.sqrt(jnp.sum(w**2, axis=(0, 1, 2), keepdims=True)))
    return cls(tuple(kernels), config.levels)

  def plan(self, side: int) -> tuple[tuple[int, ...], ...]:
    """Per level that fits, the indices of the filters that fit it."""
    out = []
    for level in range(self.levels):
      fits = tuple(i for i, k in enumerate(self.kernels) if side >> level >= 2 * k.shape[0])
      if not fits:
        break
      out.append(fits)
    return tuple(out)

  def __call__(
    self, images: jax.Array, side: int | None = None, periodic: bool = False
  ) -> list[jax.Array]:
    """Per level, (N, h, w, D) features at the positions where every filter
    fits; with `periodic`, at every position of the images taken as tori
    (each level padded around), so no pixel sits at an edge."""
    side = min(images.shape[1:3]) if side is None else side
    outs, level = [], images
    for fits in self.plan(side):
      largest = max(self.kernels[i].shape[0] for i in fits)
      rim = (largest - 1) // 2
      if periodic:
        x, pixels = jnp.pad(level, ((0, 0), (rim, rim), (rim, rim), (0, 0)), mode="wrap"), level
      else:
        x, pixels = level, _centre(level, rim)
      parts = []
      for i in fits:
        kernel = self.kernels[i]
        y = lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_DIMS)
        parts.append(_centre(jax.nn.relu(y), (largest - kernel.shape[0]) // 2))
      outs.append(jnp.concatenate([*parts, pixels, jnp.ones_like(pixels[..., :1])], axis=-1))
      level = avg_pool2(level)
    return outs


def _centre(x: jax.Array, rim: int) -> jax.Array:
  """`x` without `rim` pixels on each side."""
  return x[:, rim : x.shape[1] - rim, rim : x.shape[2] - rim] if rim else x


def cnn_features(variables: dict, where: str) -> Features:
  """The conv layers (after BatchNorm and ReLU) of a trained `configs/cnn.py`
  classifier (its `variables`, read from `where`), on grey images; one level per block."""
  params = variables["params"]
  stats = variables["batch_stats"]
  convs = sorted((k for k in params if k.startswith("Conv_")), key=lambda k: int(k[5:]))
  if len(convs) < 2 or any(k.startswith("_Block") for k in params):
    raise ConfigError(
      f"texture.network='cnn' reads the conv layers of configs/cnn.py's SimpleCNN; "
      f"{where} holds another network."
    )

  def apply(images: jax.Array, side: int | None = None, periodic: bool = False) -> list[jax.Array]:
    del side  # Every layer fits: 3x3 filters.
    x = images.mean(axis=-1, keepdims=True) if images.shape[-1] != 1 else images
    outs = []
    for i, name in enumerate(convs):
      kernel = params[name]["kernel"]
      if periodic:
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
      x = lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_DIMS)
      bn, s = params[f"BatchNorm_{i}"], stats[f"BatchNorm_{i}"]
      x = jax.nn.relu((x - s["mean"]) / jnp.sqrt(s["var"] + 1e-5) * bn["scale"] + bn["bias"])
      if i % 2:
        outs.append(x)
        x = avg_pool2(x)
    return outs

  return apply


def make_features(
  config: ml_collections.ConfigDict,
  channels: int,
  load_cnn: Callable[[], tuple[dict, str]],
  name: str = "texture",
) -> Features:
  """The optimised network of the `texture` group: random, or the trained
  classifier that `load_cnn()` returns as (its variables, where it was read)."""
  if config.network == "random":
    return RandomFeatures.create(config.features, channels, f"{name}.features")
  if config.network == "cnn":
    return cnn_features(*load_cnn())
  raise ConfigError(f"{name}.network {config.network!r}; use 'random' or 'cnn'.")


def grams(features: Features, images: jax.Array, side: int | None = None) -> list[jax.Array]:
  return [gram(f) for f in features(images, side)]


def style_loss(
  features: Features, x: jax.Array, targets: list[jax.Array], side: int, periodic: bool = False
) -> jax.Array:
  """Sum over levels of ||G_l(x) - T_l||^2 / ||T_l||^2 (each level weighs the
  same); `periodic`: `x`'s features on the torus."""
  loss = 0.0
  for g, t in zip([gram(f) for f in features(x, side, periodic)], targets, strict=True):
    loss = loss + jnp.sum((g - t) ** 2) / jnp.sum(t**2)
  return loss


def _optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  if config.optimizer == "lbfgs":
    return optax.lbfgs()
  if config.optimizer == "adam":
    return optax.adam(config.learning_rate)
  raise ConfigError(f"texture.optimizer {config.optimizer!r}; use 'lbfgs' or 'adam'.")


def _optimise(x, targets, features: Features, side: int, steps: int, config):
  """`steps` optimiser steps (one `lax.scan`); the losses before each and after the last."""
  opt = _optimizer(config)
  loss_fn = lambda x: style_loss(features, x, targets, side, config.periodic)
  lbfgs = config.optimizer == "lbfgs"
  # L-BFGS's line search has evaluated the loss and gradient at the new point already.
  value_and_grad = optax.value_and_grad_from_state(loss_fn) if lbfgs else None

  def step(carry, _):
    x, state = carry
    if lbfgs:
      value, grad = value_and_grad(x, state=state)
      updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=loss_fn)
    else:
      value, grad = jax.value_and_grad(loss_fn)(x)
      updates, state = opt.update(grad, state, x)
    return (optax.apply_updates(x, updates), state), value

  (x, _), losses = lax.scan(step, (x, opt.init(x)), length=steps)
  return x, jnp.append(losses, loss_fn(x))


def optimise(
  features: Features,
  x: jax.Array,
  target: jax.Array,
  steps: int,
  config: ml_collections.ConfigDict,
) -> tuple[jax.Array, np.ndarray]:
  """`steps` optimiser steps on the pixels of `x` (1, H, W, C) towards the Gram
  matrices of `target` (1, h, w, C); returns the image and the loss before each
  step and after the last."""
  side = min(x.shape[1], x.shape[2], target.shape[1], target.shape[2])
  targets = grams(features, target, side)
  if not targets:
    raise ConfigError(
      f"Images of {side} px are too small for every filter of the feature network (a filter "
      "needs twice its size): use a larger texture.size or exemplar, fewer scales or smaller "
      "filters."
    )
  run = jax.jit(
    functools.partial(_optimise, features=features, side=side, steps=steps, config=config)
  )
  x, losses = run(x, targets)
  return x, np.asarray(losses)


def synthesize(
  features: Features,
  exemplar: jax.Array,
  size: int,
  config: ml_collections.ConfigDict,
  key: jax.Array,
) -> tuple[np.ndarray, list[np.ndarray]]:
  """A `size` x `size` texture like `exemplar` (H, W, C) in [-1, 1], coarse to
  fine over `config.scales`; returns it in [-1, 1] and each scale's losses."""
  if config.scales < 1 or config.steps_per_scale < 1:
    raise ConfigError("texture.scales and texture.steps_per_scale must be positive.")
  if size >> (config.scales - 1) < 8:
    raise ConfigError(f"texture.size {size} is too small for {config.scales} scales.")
  if config.periodic and size % 2 ** (config.scales - 1):
    raise ConfigError(
      f"texture.size {size} must be a multiple of 2**(scales - 1) = {2 ** (config.scales - 1)} "
      "for periodic synthesis (each scale doubles the torus)."
    )
  target, x, history = jnp.asarray(exemplar)[None], None, []
  pyramid = [target]
  for _ in range(config.scales - 1):
    pyramid.append(avg_pool2(pyramid[-1]))
  for s in reversed(range(config.scales)):
    side = max(8, round(size / 2**s))
    shape = (1, side, side, exemplar.shape[-1])
    if x is None:
      mean, std = jnp.mean(target), jnp.std(target)
      x = mean + std * jax.random.normal(key, shape)
    elif config.periodic:
      x = upsample_periodic(x)
    else:
      x = jax.image.resize(x, shape, "bilinear")
    x, losses = optimise(features, x, pyramid[s], config.steps_per_scale, config)
    history.append(losses)
  return np.clip(np.asarray(x[0]), -1.0, 1.0), history


def upsample_periodic(x: jax.Array) -> jax.Array:
  """Bilinear 2x upsampling of (N, H, W, C) images taken as tori: the
  wrap-padded image resized, then cropped, so the edges blend with each other."""
  n, h, w, c = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
  return jax.image.resize(padded, (n, 2 * h + 4, 2 * w + 4, c), "bilinear")[:, 2:-2, 2:-2]


def gram_distance(features: Features, x: np.ndarray, reference: np.ndarray) -> float:
  """The relative Gram distance, summed over levels, of images (H, W, C) in [-1, 1]."""
  side = min(x.shape[:2] + reference.shape[:2])
  targets = grams(features, jnp.asarray(reference)[None], side)
  return float(style_loss(features, jnp.asarray(x)[None], targets, side))


def sifid(features: Features, x: np.ndarray, reference: np.ndarray) -> float:
  """Single-image FID in the finest level's learnt (ReLU) features: positions as samples."""
  side = min(x.shape[:2] + reference.shape[:2])

  def stats(image):
    f = features(jnp.asarray(image)[None], side)[0][0]
    f = np.asarray(f[..., : f.shape[-1] - image.shape[-1] - 1], np.float64)  # Drop pixels, 1.
    return metrics.feature_statistics(f.reshape(-1, f.shape[-1]))

  return float(metrics.frechet_distance(*stats(x), *stats(reference)))


def seam_ratio(images: np.ndarray, period: int = 1) -> float:
  """Mean |difference| across the wrap-around edges over that between interior
  neighbours (j, j + 1) with j + 1 a multiple of `period`, both axes, over
  images (..., H, W, C). A generator that is equivariant to shifts by
  `period` on a torus has the wrap pair distributed as those interior pairs,
  so its ratio is 1 up to sampling noise; for one image of a texture with
  strong edges (brick's mortar) the noise is large."""
  x = np.asarray(images, np.float64)
  h, w = x.shape[-3:-1]
  seam = np.abs(x[..., 0, :, :] - x[..., -1, :, :]).mean()
  seam += np.abs(x[..., :, 0, :] - x[..., :, -1, :]).mean()
  rows = np.arange(period - 1, h - 1, period)
  cols = np.arange(period - 1, w - 1, period)
  inside = np.abs(x[..., rows + 1, :, :] - x[..., rows, :, :]).mean()
  inside += np.abs(x[..., :, cols + 1, :] - x[..., :, cols, :]).mean()
  return float(seam / inside)


def tile(image: np.ndarray, times: int = 2) -> np.ndarray:
  """`times` x `times` copies of an (H, W, C) image, side by side."""
  return np.tile(image, (times, times, 1))
