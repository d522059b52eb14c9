"""Segmentation scores and mask images.

Scores come from the confusion matrix C (true class per row, predicted per
column) summed over every valid pixel of a split: per class, IoU = C_cc /
(row_c + col_c - C_cc) and Dice = 2 C_cc / (row_c + col_c); mean IoU and mean
Dice average the classes that occur in the truth or the prediction (others
have no defined score); pixel accuracy is trace(C) / sum(C).

Object scores (host, per image): each real object is a connected component (8-connected) of
one class of the true mask, other than the background; `instance_accuracy` counts those whose
majority predicted class is theirs. `boundary_f` is the boundary F-score (Csurka et al.
2013): per class, the boundary pixels of its true and predicted regions matched within
`tolerance` pixels, F = 2PR / (P + R), averaged over the images where the class occurs, then
over classes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage

from imgen.core.errors import ConfigError
from imgen.core.errors import DataError

# Class colours: background black, then well-separated hues (tab20's order).
PALETTE = np.array(
  [
    (0, 0, 0),
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
    (255, 255, 255),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (219, 219, 141),
    (158, 218, 229),
  ],
  np.uint8,
)


def grown(masks: jax.Array, pixels: int) -> jax.Array:
  """float32 (N, H, W): 1 within `pixels` (in x and y) of a nonzero pixel of
  `masks` (N, H, W), else 0: the masks' foreground dilated by a square."""
  size = 2 * pixels + 1
  near = (masks > 0).astype(jnp.float32)
  return jax.lax.reduce_window(near, 0.0, jax.lax.max, (1, size, size), (1, 1, 1), "SAME")


def class_names(spec: str, num_classes: int) -> tuple[str, ...]:
  """model.class_names ('background,0,1,...' or '' for 0..K-1), checked."""
  if not spec.strip():
    return tuple(str(c) for c in range(num_classes))
  names = tuple(n.strip() for n in spec.split(","))
  if len(names) != num_classes or len(set(names)) != num_classes or not all(names):
    raise ConfigError(
      f"model.class_names={spec!r} names {len(names)} classes; give {num_classes} "
      "distinct comma-separated names, or ''."
    )
  return names


def confusion(labels: jax.Array, predicted: jax.Array, k: int, weights: jax.Array) -> jax.Array:
  """(k, k) sums of `weights` by (true, predicted) class."""
  index = (labels * k + predicted).reshape(-1)
  return jnp.zeros(k * k, jnp.float32).at[index].add(weights.reshape(-1)).reshape(k, k)


def scores(confusion: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
  """Per-class IoU and Dice, their means, and pixel accuracy from a confusion matrix."""
  confusion = np.asarray(confusion, np.float64)
  hits = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - hits
  seen = union > 0
  iou = np.where(seen, hits / np.maximum(union, 1e-12), np.nan)
  dice = np.where(seen, 2 * hits / np.maximum(union + hits, 1e-12), np.nan)
  out = {
    "miou": float(np.nanmean(iou)) if seen.any() else float("nan"),
    "mean_dice": float(np.nanmean(dice)) if seen.any() else float("nan"),
    "pixel_accuracy": float(hits.sum() / max(confusion.sum(), 1e-12)),
  }
  out.update({f"iou/{name}": float(v) for name, v in zip(names, iou, strict=True)})
  out.update({f"dice/{name}": float(v) for name, v in zip(names, dice, strict=True)})
  return out


def colour(masks: np.ndarray) -> np.ndarray:
  """Integer masks (..., H, W) -> [-1, 1] RGB images (..., H, W, 3) in the palette."""
  return PALETTE[np.asarray(masks) % len(PALETTE)].astype(np.float32) / 127.5 - 1.0


def rgb(images: np.ndarray) -> np.ndarray:
  images = np.asarray(images, np.float32)
  return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def triptych_rows(images, truth, predicted, columns: int = 8) -> np.ndarray:
  """Rows of `columns`: images, their true masks, the predicted masks, in turn."""
  parts = (rgb(images), colour(truth), colour(predicted))
  rows = []
  for start in range(0, len(images), columns):
    rows += [p[start : start + columns] for p in parts]
  return np.concatenate(rows)


def overlay(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
  """[-1, 1] images half-blended with their masks' colours."""
  return 0.5 * rgb(images) + 0.5 * colour(masks)


def check_masks(name: str, split: str, masks: np.ndarray, num_classes: int) -> None:
  """A DataError when a split's mask values fall outside 0 .. num_classes - 1."""
  low, high = int(masks.min()), int(masks.max())
  if low < 0 or high >= num_classes:
    raise DataError(
      f"The masks of {name} {split} hold values {low}..{high}, outside the "
      f"{num_classes} classes 0..{num_classes - 1} of model.num_classes; set "
      f"--config.model.num_classes={high + 1} or fix the masks."
    )


_EIGHT = np.ones((3, 3), bool)  # 8-connectivity.


def instance_accuracy(truth, predicted, background: int = 0) -> tuple[int, int]:
  """(objects whose majority predicted class is theirs, objects) over (H, W) mask pairs."""
  right = total = 0
  for t, p in zip(truth, predicted, strict=True):
    t, p = np.asarray(t), np.asarray(p)
    for c in np.unique(t):
      if c == background:
        continue
      components, n = scipy.ndimage.label(t == c, structure=_EIGHT)
      for i in range(1, n + 1):
        votes = np.bincount(p[components == i].ravel())
        right += int(np.argmax(votes) == c)
      total += n
  return right, total


def _boundary(region: np.ndarray) -> np.ndarray:
  """The region's pixels with a 4-neighbour outside it (the image's edge is not one)."""
  return region & ~scipy.ndimage.binary_erosion(region, border_value=1)


def boundary_f(truth, predicted, num_classes: int, tolerance: int = 1) -> float:
  """Mean over classes of the mean over images (where the class occurs) of the F-score of
  its predicted boundary against the true one, each within `tolerance` pixels."""
  reach = np.ones((2 * tolerance + 1,) * 2, bool)
  per_class = [[] for _ in range(num_classes)]
  for t, p in zip(truth, predicted, strict=True):
    t, p = np.asarray(t), np.asarray(p)
    for c in np.union1d(np.unique(t), np.unique(p)):
      bt, bp = _boundary(t == c), _boundary(p == c)
      if not bt.any() and not bp.any():
        continue
      precision = (bp & scipy.ndimage.binary_dilation(bt, reach)).sum() / max(bp.sum(), 1)
      recall = (bt & scipy.ndimage.binary_dilation(bp, reach)).sum() / max(bt.sum(), 1)
      both = precision + recall
      per_class[c].append(0.0 if both == 0 else 2 * precision * recall / both)
  means = [np.mean(f) for f in per_class if f]
  return float(np.mean(means)) if means else float("nan")
