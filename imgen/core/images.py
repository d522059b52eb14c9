"""Image grids and PNG files."""

import io
import math

import numpy as np
from PIL import Image

from imgen.core import files


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
  scale = max(1, math.ceil(min_side / max(image.shape[:2])))
  image = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
  write_png(path, Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image))


def write_png(path: str, image: Image.Image) -> None:
  """Writes a PIL image as PNG (its mode and palette kept) wherever `files` reaches."""
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  files.write(path, buffer.getvalue())
