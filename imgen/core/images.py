"""Image grids and PNG files."""

import math
import os

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[-1, 1] floats -> uint8 in [0, 255]."""
  return np.clip(np.rint((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def from_uint8(images: np.ndarray) -> np.ndarray:
  """uint8 in [0, 255] -> float32 in [-1, 1]."""
  return np.asarray(images, np.float32) / 127.5 - 1.0


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
  """(N, H, W, C) uint8 -> one (rows*(H+p)+p, cols*(W+p)+p, C) uint8 image."""
  n, h, w, c = images.shape
  columns = columns or math.ceil(math.sqrt(n))
  rows = math.ceil(n / columns)
  grid = np.zeros((rows * (h + padding) + padding, columns * (w + padding) + padding, c), np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, columns)
    top, left = padding + r * (h + padding), padding + col * (w + padding)
    grid[top : top + h, left : left + w] = image
  return grid


def save_png(path: str, image: np.ndarray, min_side: int = 256) -> None:
  """Writes an HWC uint8 image, enlarged (nearest) so small grids stay visible."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  scale = max(1, math.ceil(min_side / max(image.shape[:2])))
  image = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)
