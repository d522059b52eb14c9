"""DiffAugment (Zhao, Liu, Lin, Zhu & Han, NeurIPS 2020, arXiv:2006.10738).

Differentiable augmentations applied to every image the discriminator sees,
real and generated, in the discriminator's and the generator's steps alike, so
that D cannot tell the two apart by the augmentation and G's gradient flows
through it. The policies, as the paper defines them for images in [-1, 1]:

- `color`: brightness + U(-0.5, 0.5); saturation: the deviation from the
  channel mean times U(0, 2); contrast: the deviation from the image mean
  times U(0.5, 1.5); one draw per image each.
- `translation`: shift by up to 1/8 of the size in each direction (integer
  pixels, drawn per image), zeros filling in.
- `cutout`: zero one square of half the size, centred anywhere in the image
  (clipped at its borders), per image.

Draws come from `parallel.global_draw`: the same augmentations on any number
of devices.
"""

from collections.abc import Callable

import jax
from jax import lax
import jax.numpy as jnp

from imgen.core import parallel
from imgen.core.errors import ConfigError


def _uniform(key, local_batch, low, high):
  draw = lambda k, shape: jax.random.uniform(k, shape, minval=low, maxval=high)
  return parallel.global_draw(draw, key, local_batch, (1, 1, 1))


def _integers(key, local_batch, low, high):
  draw = lambda k, shape: jax.random.randint(k, shape, low, high)
  return parallel.global_draw(draw, key, local_batch, ())


def color(x: jax.Array, key: jax.Array) -> jax.Array:
  b = x.shape[0]
  brightness, saturation, contrast = jax.random.split(key, 3)
  x = x + _uniform(brightness, b, -0.5, 0.5)
  mean = jnp.mean(x, axis=3, keepdims=True)
  x = (x - mean) * _uniform(saturation, b, 0.0, 2.0) + mean
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) * _uniform(contrast, b, 0.5, 1.5) + mean


def translation(x: jax.Array, key: jax.Array, ratio: float = 0.125) -> jax.Array:
  b, h, w, _ = x.shape
  sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
  kh, kw = jax.random.split(key)
  dy = _integers(kh, b, -sh, sh + 1)
  dx = _integers(kw, b, -sw, sw + 1)
  padded = jnp.pad(x, ((0, 0), (sh, sh), (sw, sw), (0, 0)))
  # Output pixel (i, j) is input pixel (i - dy, j - dx), zero outside.
  crop = lambda image, y0, x0: lax.dynamic_slice(image, (y0, x0, 0), (h, w, x.shape[3]))
  return jax.vmap(crop)(padded, sh - dy, sw - dx)


def cutout(x: jax.Array, key: jax.Array, ratio: float = 0.5) -> jax.Array:
  b, h, w, _ = x.shape
  ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
  kh, kw = jax.random.split(key)
  cy = _integers(kh, b, 0, h + (1 - ch % 2))
  cx = _integers(kw, b, 0, w + (1 - cw % 2))
  rows = jnp.arange(h)[None, :] - (cy[:, None] - ch // 2)
  cols = jnp.arange(w)[None, :] - (cx[:, None] - cw // 2)
  inside = ((rows >= 0) & (rows < ch))[:, :, None] & ((cols >= 0) & (cols < cw))[:, None, :]
  return x * (~inside)[..., None].astype(x.dtype)


POLICIES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
  "color": color,
  "translation": translation,
  "cutout": cutout,
}


def parse(policy: str) -> tuple[str, ...]:
  """'color,translation' -> ('color', 'translation'); '' -> () (off)."""
  names = tuple(n.strip() for n in policy.split(",") if n.strip())
  unknown = [n for n in names if n not in POLICIES]
  if unknown:
    raise ConfigError(
      f"objective.diffaugment={policy!r} names {unknown}; known: {', '.join(POLICIES)} "
      "(comma-separated, or '' for none)."
    )
  return names


def diff_augment(x: jax.Array, key: jax.Array, policies: tuple[str, ...]) -> jax.Array:
  """`x` (this replica's rows of a global batch) through each policy in turn."""
  for i, name in enumerate(policies):
    x = POLICIES[name](x, jax.random.fold_in(key, i))
  return x
