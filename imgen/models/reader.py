"""A network that reads a scene's layout on a grid of cells (a small one-stage detector).

Like YOLO (Redmon et al. 2016) on a fixed 3x3 grid, with one head shared by
the cells (each cell's examples teach every cell to read a digit):
- the image is resized (bilinear) to 6 * 2**levels pixels a side, so after
  `levels` poolings each cell of the grid is 2x2 locations of the feature map;
- (conv-BN-ReLU x2, max-pool) per level, then two more conv-BN-ReLU at the
  lowest resolution for context;
- per cell, the 4x4 window of locations over the cell and a ring of one
  around it (the map padded by one with zeros), with a one-hot of the cell
  (windows at the image's edge differ), goes through a shared dense-ReLU-
  dropout layer to the cell's logits: digit present, class, colour, size;
- the background's logits from the spatial mean of the last map.
Under pmap (`axis_name` set) BatchNorm statistics are synchronised across
devices, so a run computes the same on any device count.
"""

import functools
import typing

import flax.linen as nn
import jax
import jax.numpy as jnp

from imgen.models.classifiers import Dropout
from imgen.models.layers import Conv
from imgen.models.layers import max_pool_2x2

GRID = 3  # Cells per side.


class CellLogits(typing.NamedTuple):
  """float32 logits: background (N, B); per cell (N, C, ...): present, digit, colour, size."""

  background: jax.Array
  present: jax.Array
  digit: jax.Array
  colour: jax.Array
  size: jax.Array


def cell_windows(x: jax.Array) -> jax.Array:
  """(N, 2G, 2G, C) -> (N, G*G, 4, 4, C): each cell's 2x2 locations and a ring of one."""
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.stack(
    [padded[:, 2 * r : 2 * r + 4, 2 * c : 2 * c + 4] for r in range(GRID) for c in range(GRID)],
    axis=1,
  )


class LayoutReader(nn.Module):
  """The layout of a scene: CellLogits (module docstring)."""

  num_backgrounds: int
  num_colours: int
  num_sizes: int
  num_digits: int = 10
  width: int = 32
  levels: int = 3
  hidden: int = 256
  dropout: float = 0.2
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, features: bool = False):
    """CellLogits, or with `features` (N, D): the last map's spatial mean and the
    cells' mean hidden features."""
    norm = functools.partial(
      nn.BatchNorm,
      use_running_average=not train,
      momentum=0.9,
      axis_name=self.axis_name if train else None,
      dtype=self.dtype,
    )
    n = x.shape[0]
    side = 2 * GRID * 2**self.levels
    if x.shape[1:3] != (side, side):
      x = jax.image.resize(x, (n, side, side, x.shape[-1]), "bilinear", antialias=False)

    def conv_bn_relu(x, channels):
      x = Conv(channels, (3, 3), use_bias=False, dtype=self.dtype)(x)
      return nn.relu(norm()(x))

    for level in range(self.levels):
      x = conv_bn_relu(conv_bn_relu(x, self.width * 2**level), self.width * 2**level)
      x = max_pool_2x2(x)
    top = self.width * 2**self.levels
    x = conv_bn_relu(conv_bn_relu(x, top), top)
    pooled = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
    windows = cell_windows(x).reshape(n, GRID * GRID, -1)
    which = jnp.broadcast_to(jnp.eye(GRID * GRID, dtype=windows.dtype), (n, GRID * GRID, 9))
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    h = nn.relu(dense(self.hidden)(jnp.concatenate([windows, which], -1)))
    if features:
      return jnp.concatenate([pooled, jnp.mean(h, axis=1).astype(jnp.float32)], -1)
    h = Dropout(self.dropout, self.axis_name)(h, deterministic=not train)
    per_cell = 1 + self.num_digits + self.num_colours + self.num_sizes
    cells = dense(per_cell)(h).astype(jnp.float32)
    ends = (1, 1 + self.num_digits, 1 + self.num_digits + self.num_colours)
    present, digit, colour, size = jnp.split(cells, ends, axis=-1)
    background = dense(self.num_backgrounds)(pooled.astype(self.dtype)).astype(jnp.float32)
    return CellLogits(background, present[..., 0], digit, colour, size)
