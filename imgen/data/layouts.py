"""`layout_scenes`: captioned scenes a judge can read (TFDS, prepared on first use).

GenEval's kinds of prompt (Ghosh et al. 2023: one object, two objects, colour
attribution, position) over `digit_scenes`' backgrounds: one or two real
MNIST digits (half the scenes each) that do not touch, in distinct cells of
the 3x3 grid, sized and coloured so the attributes can be read at 32x32:
- position: the centre of each digit's box, and the centre of its ink's box
  (which a reader sees; MNIST centres digits by mass, not by box), lie in its
  cell, at least `CELL_MARGIN` pixels (of 64) inside the cell's inner edges; the box may
  overhang the image by `OVERHANG` of its side (MNIST's blank border), its
  ink never;
- size: `medium` boxes are 31-33 pixels, `large` 42-44 (`SIDES`): their inks'
  extents lie ~6 pixels apart, 3 at 32x32 (captions' `size_name` names them;
  `small` is not drawn; version 1.1.0's 30-33 and 38-41 left 1.5 at 32x32, which a
  writer's stroke spans);
- colour: a name of `captions.COLOURS` drawn uniformly, then a colour well
  inside it (`_colour_of`: hues within 12 degrees of the sector's centre,
  saturated and bright; white, grey and black near-neutral), redrawn (with
  the digit's cell and name) until `CONTRAST_SHARE` of the background pixels
  under its ink lie `MIN_DISTANCE` from it in RGB (chroma counts as contrast,
  unlike digit_scenes' luminance rule; version 1.0.0 measured the distance to
  their mean colour, which let a grey digit vanish into half of a textured
  photograph);
- non-overlap: the two digits' inks (alpha > 0.1), each grown by a pixel, are
  disjoint.
The backgrounds are crops of the whole photographs in both splits (the
prompts name a photograph; reading which one is not a test of generalising
to its unseen half); the digits keep `embedded_mnist`'s split, as in
digit_scenes. Captions, tokens and held-out triples are `scene_captions`' (imgen/data/
captions.py); in the train split a digit whose (digit, colour, position)
triple is held out has its colour and cell drawn again, so the train split
holds no held-out triple and keeps all its scenes; the test split draws
freely. Besides `scene_captions`' features each example carries its layout
as labels: `cells` (index in `captions.POSITION_NAMES`), `colour_names`
(index in `COLOURS`), `sizes` (index in `SIZES`), -1 where absent.
20,000 train and 1,000 test scenes (`tiny`: 64 and 32).
"""

import colorsys
import typing

import numpy as np
import scipy.ndimage
import tensorflow_datasets as tfds

from imgen.data import captions
from imgen.data import scenes
from imgen.methods import layouts as layout_checks

MAX_DIGITS = 2
SIDES = {"medium": (31, 33), "large": (42, 44)}  # Box sides in pixels of 64, inclusive.
OVERHANG = 4 / 28  # Share of a box's side that may lie outside the image (MNIST's blank border).
MIN_DISTANCE = 120  # RGB distance between a digit's colour and the background pixels under it,
CONTRAST_SHARE = 0.9  # for this share of them.
CELL_MARGIN = 2.5  # Pixels (of 64) between a centre and its cell's inner edges.
_HUE_SPREAD = 12 / 360  # Hue within this of its sector's centre.
CAPTIONS = 4
_SEED = 20231017  # Fixed forever. (GenEval's arXiv date.)


def _colour_of(rng: np.random.Generator, name: str) -> np.ndarray:
  """An RGB uint8 colour well inside the colour name `name`."""
  if name in captions.HUES:
    hue = captions.HUES.index(name) / 6 + rng.uniform(-_HUE_SPREAD, _HUE_SPREAD)
    rgb = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.75, 1.0), rng.uniform(0.8, 1.0))
    rgb = np.array(rgb) * 255
  else:
    level = {"white": (228, 255), "grey": (115, 150), "black": (0, 40)}[name]
    rgb = rng.uniform(*level) + rng.uniform(-8, 8, 3)
  return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _place(rng: np.random.Generator, cell: int, side: int) -> tuple[int, int]:
  """(top, left) of a box of `side` whose centre lies CELL_MARGIN inside `cell`
  (0-8) of the 3x3 grid, the box at most OVERHANG of its side outside the image."""
  third, over = scenes.SIZE / 3, int(side * OVERHANG)
  corner = []
  for k in divmod(cell, 3):
    low = k * third + (CELL_MARGIN if k > 0 else 0.0)
    high = (k + 1) * third - (CELL_MARGIN if k < 2 else 0.0)
    starts = range(-over, scenes.SIZE - side + over + 1)
    corner.append(int(rng.choice([s for s in starts if low <= s + side / 2 < high])))
  return corner[0], corner[1]


def _ink_in_cell(alpha: np.ndarray, cell: int) -> bool:
  """Whether the centre of the ink's box (alpha > 0.1) lies CELL_MARGIN inside
  `cell`'s inner edges, as the box's centre does: the cell a reader sees."""
  third = scenes.SIZE / 3
  for k, axis in zip(divmod(cell, 3), (1, 0), strict=True):
    where = np.flatnonzero((alpha > 0.1).any(axis=axis))
    centre = (where[0] + where[-1] + 1) / 2
    low = k * third + (CELL_MARGIN if k > 0 else -np.inf)
    high = (k + 1) * third - (CELL_MARGIN if k < 2 else -np.inf)
    if not low <= centre < high:
      return False
  return True


_PAD = 8  # Pixels around the image of the canvas digits are pasted on (>= OVERHANG * 44).


def _on_canvas(alpha: np.ndarray, top: int, left: int) -> np.ndarray:
  """alpha (side, side) placed at (top, left) of the image on the padded canvas."""
  canvas = np.zeros((scenes.SIZE + 2 * _PAD,) * 2, alpha.dtype)
  side = alpha.shape[0]
  canvas[_PAD + top : _PAD + top + side, _PAD + left : _PAD + left + side] = alpha
  return canvas


def _inside(canvas: np.ndarray) -> np.ndarray:
  return canvas[_PAD:-_PAD, _PAD:-_PAD]


def _grown_ink(alpha: np.ndarray) -> np.ndarray:
  """Where alpha > 0.1, grown by one pixel (3x3)."""
  return scipy.ndimage.binary_dilation(alpha > 0.1, np.ones((3, 3), bool))


def make_layout_scene(
  rng: np.random.Generator,
  split: str,
  digits: np.ndarray,
  digit_labels: np.ndarray,
  digit_ids: np.ndarray,
) -> dict:
  """One scene of `split` drawn by `rng` from the split's digits (N, 28, 28),
  labels and MNIST indices: digit_scenes' fields plus the layout labels."""
  background = int(rng.integers(len(scenes.BACKGROUNDS)))
  image, crop = scenes.crop_square(
    rng, scenes.source_image(scenes.BACKGROUNDS[background]), (scenes.SIZE, 256)
  )
  image = image.astype(np.float32)
  mask = np.zeros((scenes.SIZE, scenes.SIZE), np.uint8)
  n = MAX_DIGITS
  out = {
    "digits": np.full(n, -1, np.int32),
    "digit_ids": np.full(n, -1, np.int32),
    "boxes": np.zeros((n, 4), np.int32),
    "colours": np.zeros((n, 3), np.uint8),
    "cells": np.full(n, -1, np.int32),
    "colour_names": np.full(n, -1, np.int32),
    "sizes": np.full(n, -1, np.int32),
  }
  taken = np.zeros_like(mask, bool)
  used_cells: list[int] = []
  k, wanted, draws = 0, int(rng.integers(1, n + 1)), 0
  while k < wanted:
    draws += 1
    if draws > 50:  # Never seen: a photograph no colour stands out from.
      raise RuntimeError(f"No digit fits background {scenes.BACKGROUNDS[background]} at {crop}.")
    i = int(rng.integers(len(digits)))
    size = list(SIDES)[int(rng.integers(len(SIDES)))]
    side = int(rng.integers(SIDES[size][0], SIDES[size][1] + 1))
    alpha = scenes.resize(digits[i], side, side).astype(np.float32) / 255.0
    for _ in range(100):
      cell = int(rng.choice([c for c in range(9) if c not in used_cells]))
      top, left = _place(rng, cell, side)
      placed = _on_canvas(alpha, top, left)
      ink = _grown_ink(placed)
      outside = (placed > 0.1).sum() - (_inside(placed) > 0.1).sum()
      if outside or (_inside(ink) & taken).any() or not _ink_in_cell(_inside(placed), cell):
        continue
      placed = _inside(placed)
      under = image[placed > 0.5]
      name = captions.COLOURS[int(rng.integers(len(captions.COLOURS)))]
      colour = _colour_of(rng, name)
      far = np.linalg.norm(under - colour, axis=1) >= MIN_DISTANCE
      if np.mean(far) < CONTRAST_SHARE:
        continue
      position = captions.POSITION_NAMES[cell]
      if split == "train" and captions.is_held_out(
        captions.Digit(int(digit_labels[i]), name, None, position)
      ):
        continue
      break
    else:  # No room or colour found: the first digit is drawn again, a second left out.
      if k:
        break
      continue
    image = image * (1 - placed[..., None]) + colour.astype(np.float32) * placed[..., None]
    mask[placed > 0.5] = 1 + digit_labels[i]
    taken |= _inside(ink)
    used_cells.append(cell)
    out["digits"][k], out["digit_ids"][k] = digit_labels[i], digit_ids[i]
    out["boxes"][k] = (top, left, side, side)
    out["colours"][k] = colour
    out["cells"][k] = cell
    out["colour_names"][k] = captions.COLOURS.index(name)
    out["sizes"][k] = captions.SIZES.index(size)
    k += 1
  image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
  return {"image": image, "mask": mask, "background": background, "crop": crop, **out}


def layout_of(example: dict) -> captions.Layout:
  """The layout a `layout_scenes` example states, from its label fields."""
  digits = tuple(
    captions.Digit(
      int(d), captions.COLOURS[int(c)], captions.SIZES[int(s)], captions.POSITION_NAMES[int(p)]
    )
    for d, c, s, p in zip(
      example["digits"], example["colour_names"], example["sizes"], example["cells"], strict=True
    )
    if d >= 0
  )
  return captions.Layout(captions.BACKGROUND_NAMES[int(example["background"])], digits)


def reading_of_layouts(
  parsed: typing.Sequence[captions.Layout],
) -> tuple[layout_checks.Reading, np.ndarray]:
  """The cell-by-cell Reading of parsed layouts (every digit with a position,
  one digit a cell; ValueError otherwise), and which attributes each leaves
  unsaid: bool (N, len(ATTRIBUTES)), True where a prompt does not state a
  digit's colour or size, or the background."""
  n = len(parsed)
  present = np.zeros((n, layout_checks.NUM_CELLS), bool)
  digit, colour, size = (np.zeros((n, layout_checks.NUM_CELLS), np.int32) for _ in range(3))
  background = np.zeros(n, np.int32)
  unsaid = np.zeros((n, len(layout_checks.ATTRIBUTES)), bool)
  for i, layout in enumerate(parsed):
    for d in layout.digits:
      if d.position is None:
        raise ValueError(f"Scoring needs every digit's position: {layout}")
      cell = captions.POSITION_NAMES.index(d.position)
      if present[i, cell]:
        raise ValueError(f"Two digits in one cell ({d.position}): {layout}")
      present[i, cell] = True
      digit[i, cell] = d.digit
      colour[i, cell] = captions.COLOURS.index(d.colour) if d.colour else 0
      size[i, cell] = captions.SIZES.index(d.size) if d.size else 0
      unsaid[i, layout_checks.ATTRIBUTES.index("colour")] |= d.colour is None
      unsaid[i, layout_checks.ATTRIBUTES.index("size")] |= d.size is None
    said = layout.background in captions.BACKGROUND_NAMES
    background[i] = captions.BACKGROUND_NAMES.index(layout.background) if said else 0
    unsaid[i, layout_checks.ATTRIBUTES.index("background")] = not said
  return layout_checks.Reading(present, digit, colour, size, background), unsaid


class LayoutScenes(scenes.DigitScenes, skip_registration=True):
  """One or two readable digits on digit_scenes' backgrounds, with captions."""

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {
    "1.0.0": "First release.",
    "1.1.0": "Contrast per pixel: 90% of the background under a digit's ink lies 120 from it.",
    "1.2.0": "Size bands apart: medium boxes 31-33 pixels of 64, large 42-44 (were 30-33, 38-41).",
  }

  DATASET_ID = 2
  BUILDER_CONFIGS = [
    scenes.SceneConfig(
      name="full", description="20,000 train and 1,000 test scenes.", train=20_000
    ),
    scenes.SceneConfig(
      name="tiny", description="The first 64 train and 32 test scenes.", train=64, test=32
    ),
  ]
  DESCRIPTION = (
    "64x64 scenes of 1-2 non-touching real MNIST digits in distinct cells of a 3x3 grid, "
    "in clear colours and two sizes, on real photographs; captions and layout labels."
  )
  FEATURES = {
    **scenes.DigitScenes.FEATURES,
    "digits": ((MAX_DIGITS,), np.int32),
    "digit_ids": ((MAX_DIGITS,), np.int32),
    "boxes": ((MAX_DIGITS, 4), np.int32),
    "colours": ((MAX_DIGITS, 3), np.uint8),
    "cells": ((MAX_DIGITS,), np.int32),
    "colour_names": ((MAX_DIGITS,), np.int32),
    "sizes": ((MAX_DIGITS,), np.int32),
    "captions": ((CAPTIONS, captions.TOKEN_LENGTH), np.int32),
    "novel_captions": ((CAPTIONS, captions.TOKEN_LENGTH), np.int32),
    "held_out": ((), np.int32),
  }

  def _example(self, rng, split, state):
    scene = make_layout_scene(rng, split, *state)
    layout = layout_of(scene)
    words = np.random.default_rng([_SEED, int(split == "test"), int(rng.integers(2**31))])
    encoded = lambda phrasing: np.stack(
      [captions.encode(captions.caption(layout, words, phrasing)) for _ in range(CAPTIONS)]
    )
    train = encoded("train")
    novel = encoded("held_out") if split == "test" else 0 * train
    held_out = int(any(map(captions.is_held_out, layout.digits)))
    return {**scene, "captions": train, "novel_captions": novel, "held_out": held_out}


BUILDERS = {"layout_scenes": LayoutScenes}
