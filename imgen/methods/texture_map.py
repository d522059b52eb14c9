"""Texture mapping: fill a shape given by a mask with a texture through a warp, shaded.

The texture is sampled at warped coordinates with
`jax.scipy.ndimage.map_coordinates` (bilinear, wrapping around, so a tileable
texture never shows a seam). The coordinates (`WARPS`) are
- `identity`: the pixel grid itself (the texture unchanged);
- `smooth`: the grid plus a smooth random displacement field (Gaussian noise
  on a coarse grid, bilinearly upsampled);
- `outline`: coordinates of the shape itself, so the texture follows its
  outline: one axis is the distance to the outline (the exact Euclidean
  distance transform), the other the angle around the shape's centre, scaled
  so that a whole number of texture widths goes round (no seam where the
  angle wraps, for a tileable texture).
Shading treats the shape as a height field that rises with the square root of
the distance to its outline, lit from the top left (Lambert's cosine plus an
ambient term, scaled so that flat parts keep the texture's brightness).
Everything is jitted and batched with `jax.vmap`.
"""

import functools

import jax
import jax.numpy as jnp
from jax.scipy import ndimage

WARPS = ("identity", "smooth", "outline")
_LIGHT = (-0.5, -0.5, 0.7071)  # (row, column, height) direction to the light, unit length.
_AMBIENT = 0.35


def distance_transform(mask: jax.Array) -> jax.Array:
  """Euclidean distance of each pixel of a boolean (H, W) mask to the nearest
  pixel outside it (0 outside): scipy.ndimage.distance_transform_edt, exactly.

  The squared distance separates: min over outside (y', x') of
  (y - y')^2 + (x - x')^2 = min_x' [(x - x')^2 + min_y' (y - y')^2], each a
  brute-force minimum along one axis.
  """
  h, w = mask.shape
  big = jnp.float32(4 * (h + w) ** 2)
  rows, cols = jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32)
  # column[y, x] = min over outside y' of (y - y')^2, for each column x.
  column = jnp.min(
    jnp.where(~mask[None, :, :], (rows[:, None, None] - rows[None, :, None]) ** 2, big), axis=1
  )
  squared = jnp.min((cols[:, None] - cols[None, :])[None] ** 2 + column[:, None, :], axis=2)
  return jnp.sqrt(jnp.minimum(squared, big))


def identity_coordinates(h: int, w: int) -> jax.Array:
  """(2, H, W) row and column of every pixel."""
  return jnp.stack(jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")).astype(jnp.float32)


def smooth_coordinates(key: jax.Array, h: int, w: int, amplitude: float, cells: int = 4):
  """The grid displaced by a smooth random field of about `amplitude` pixels
  (standard deviation), varying over `cells` cells a side."""
  coarse = jax.random.normal(key, (2, cells + 1, cells + 1))
  field = jax.image.resize(coarse, (2, h, w), "bilinear")
  return identity_coordinates(h, w) + amplitude * field


def outline_coordinates(mask: jax.Array, texture_width: int, stretch: float = 1.0):
  """(2, H, W) texture coordinates of the shape: row = `stretch` x the distance
  to the outline, column = the angle around the mask's centre of mass, scaled
  to the whole number of `texture_width`s nearest the shape's mean perimeter."""
  h, w = mask.shape
  grid = identity_coordinates(h, w)
  weights = mask.astype(jnp.float32)
  area = jnp.maximum(weights.sum(), 1.0)
  centre = (grid * weights).sum(axis=(1, 2)) / area
  offset = grid - centre[:, None, None]
  angle = jnp.arctan2(offset[0], offset[1])  # (-pi, pi]
  radius = (jnp.hypot(offset[0], offset[1]) * weights).sum() / area
  turns = jnp.maximum(1.0, jnp.round(2 * jnp.pi * radius / texture_width))
  column = (angle + jnp.pi) / (2 * jnp.pi) * turns * texture_width
  return jnp.stack([stretch * distance_transform(mask), column])


def warp(texture: jax.Array, coordinates: jax.Array) -> jax.Array:
  """`texture` (h, w, C) sampled bilinearly at (2, H, W) coordinates, wrapping around."""
  sample = lambda channel: ndimage.map_coordinates(channel, list(coordinates), order=1, mode="wrap")
  return jax.vmap(sample, in_axes=-1, out_axes=-1)(texture)


def shading(mask: jax.Array) -> jax.Array:
  """(H, W) brightness factors of a shape lit as a height field rising with
  sqrt(distance to the outline): ambient + (1 - ambient) * max(0, n . light) /
  (z . light), so a flat part keeps its brightness and slopes towards the
  light get brighter, away from it darker; 1 outside the shape."""
  d = distance_transform(mask)
  height = jnp.sqrt(d) * 2.0
  dy, dx = jnp.gradient(height)
  normal = jnp.stack([-dy, -dx, jnp.ones_like(dy)])
  normal = normal / jnp.linalg.norm(normal, axis=0, keepdims=True)
  lambert = jnp.maximum(0.0, jnp.tensordot(jnp.asarray(_LIGHT), normal, axes=1))
  return jnp.where(mask, _AMBIENT + (1 - _AMBIENT) * lambert / _LIGHT[2], 1.0)


@functools.partial(jax.jit, static_argnames=("kind", "shade"))
def map_texture(
  textures: jax.Array,
  masks: jax.Array,
  backgrounds: jax.Array,
  key: jax.Array,
  kind: str = "outline",
  shade: bool = True,
  amplitude: float = 6.0,
) -> jax.Array:
  """Batched: textures (N, h, w, C) and backgrounds (N, H, W, C) in [-1, 1],
  boolean masks (N, H, W) -> the textures warped by `kind` into the masks,
  shaded, over the backgrounds."""
  if kind not in WARPS:
    raise ValueError(f"Warp {kind!r} is unknown; known: {WARPS}.")
  n, h, w = masks.shape

  def one(texture, mask, background, key):
    if kind == "identity":
      coordinates = identity_coordinates(h, w)
    elif kind == "smooth":
      coordinates = smooth_coordinates(key, h, w, amplitude)
    else:
      coordinates = outline_coordinates(mask, texture.shape[1])
    filled = warp(texture, coordinates)
    if shade:
      filled = (filled + 1.0) * shading(mask)[..., None] - 1.0
    return jnp.where(mask[..., None], jnp.clip(filled, -1.0, 1.0), background)

  return jax.vmap(one)(textures, masks, backgrounds, jax.random.split(key, n))
