"""Elastic distortion of images and their masks (Simard, Steinkraus & Platt,
ICDAR 2003, "Best practices for convolutional neural networks applied to visual
document analysis"), the augmentation that made small MNIST training sets
generalise: each pixel moves by a random displacement field, i.i.d. U(-1, 1)
per pixel and axis, smoothed by a Gaussian of `sigma` pixels. Simard et al.
scale the smoothed field by a fixed alpha; here each field is scaled to an RMS
displacement of `rms` pixels, so the setting reads in pixels at any size.

`confine` limits a field to the surroundings of a mask's nonzero pixels (the
digits of a scene), so the rest of the image (its background) stays as it is.

Images are resampled bilinearly and masks by nearest neighbour at the same
coordinates, the edges repeated. Draws come from `parallel.global_draw`: the
same fields on any number of devices.
"""

import jax
import jax.numpy as jnp
import numpy as np

from imgen.core import parallel
from imgen.methods import masks as mask_lib


def gaussian_matrix(n: int, sigma: float) -> np.ndarray:
  """(n, n): row i smooths a signal of length n by a Gaussian of `sigma` centred
  at i, renormalised where it meets the edges."""
  d = np.arange(n)[:, None] - np.arange(n)[None, :]
  g = np.exp(-0.5 * (d / sigma) ** 2)
  return (g / g.sum(1, keepdims=True)).astype(np.float32)


def displacements(key: jax.Array, local_batch: int, h: int, w: int, rms: float, sigma: float):
  """(local_batch, h, w, 2) smoothed fields of RMS `rms` pixels, this replica's rows."""
  draw = lambda k, shape: jax.random.uniform(k, shape, minval=-1.0, maxval=1.0)
  raw = parallel.global_draw(draw, key, local_batch, (h, w, 2))
  smooth = jnp.einsum("ai,nijc,bj->nabc", gaussian_matrix(h, sigma), raw, gaussian_matrix(w, sigma))
  scale = jnp.sqrt(jnp.mean(jnp.square(smooth), axis=(1, 2, 3), keepdims=True))
  return smooth * (rms / jnp.maximum(scale, 1e-12))


def confine(fields: jax.Array, masks: jax.Array, grow: int = 2, sigma: float = 1.0) -> jax.Array:
  """`fields` (N, H, W, 2) times a window that is 1 within `grow` - 1 pixels of
  the nonzero pixels of `masks` (N, H, W) and falls to 0 over a few `sigma`
  beyond `grow` (a Gaussian blur of the grown mask, doubled and clipped to 1; 0 where
  below 0.01, so pixels far from the mask do not move at all)."""
  _, h, w = masks.shape
  near = mask_lib.grown(masks, grow)
  window = jnp.einsum("ai,nij,bj->nab", gaussian_matrix(h, sigma), near, gaussian_matrix(w, sigma))
  window = jnp.where(window < 0.005, 0.0, jnp.minimum(2.0 * window, 1.0))
  return fields * window[..., None]


def warp(images: jax.Array, masks: jax.Array, fields: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Images (N, H, W, C) bilinearly and masks (N, H, W) by nearest neighbour, each
  pixel (y, x) read from (y + dy, x + dx) of `fields` (N, H, W, 2)."""
  _, h, w = masks.shape
  y, x = jnp.meshgrid(
    jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
  )

  def one(image, mask, field):
    at = [y + field[..., 0], x + field[..., 1]]
    sample = lambda plane, order: jax.scipy.ndimage.map_coordinates(
      plane, at, order=order, mode="nearest"
    )
    warped = jax.vmap(lambda c: sample(c, 1), in_axes=-1, out_axes=-1)(image)
    return warped, sample(mask, 0)

  return jax.vmap(one)(images, masks, fields)


def distort(images, masks, key, rms: float, sigma: float):
  """Elastically distorted (images, masks) of this replica's batch."""
  n, h, w = masks.shape
  return warp(images, masks, displacements(key, n, h, w, rms, sigma))
