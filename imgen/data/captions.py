"""Captions with exact ground truth for `digit_scenes`, for text-to-image models.

- `layout_of(example)`: a scene's `Layout` in words: the background's noun
  phrase (`BACKGROUND_NAMES`) and, in pasting order, each digit's class,
  `colour_name`, `size_name` (box side 22-29 small, 30-36 medium, 37-44
  large) and `position_name` (box centre in a 3x3 grid of the image).
- Colours: the HSV hue sector (60 degrees around red, yellow, green, cyan,
  blue, magenta) unless achromatic (max - min channel < `GREY_CHROMA`: black,
  grey or white by luminance) or dark (max channel < `DARK_VALUE`: black). On
  digit_scenes' train digits (uniform random RGB far in luminance from the
  background): yellow 20%, green, cyan and blue 13%, white 9%, red, magenta
  and black 8-9%, grey 6%. Oranges and browns fall to red or yellow, pastels
  to white, muted tones to grey.
- `caption(layout, rng, phrasing)` states every attribute, in "train" or
  "held_out" phrasings (templates never used in training captions).
  `parse(text)` reads back all of them exactly, and short prompts too: the
  article, a digit's colour, size and position and the background may be left
  out ("a green 5 on grass"), and are None. Synonyms: center/middle, gray,
  big; a final "." is ignored. ValueError for what it cannot read.
- Held out (`is_held_out`): the (digit, colour, position) triples with
  (digit + 3 colour + 5 position) % 8 == 0 (indices in `COLOURS`,
  `POSITION_NAMES`): 102 of 810. Every pair of their values keeps all but
  one or two partners in training.
- Tokenizer: `tokens` lower-cases and splits text into runs of word
  characters and single punctuation marks; id 0 is PAD, then `WORDS` (all the
  grammar writes), then 256 byte ids: `encode` writes any other word as its
  UTF-8 bytes (a space byte between two such words), so any text encodes.
  `decode` joins words by spaces, punctuation against the word before.
"""

import colorsys
import functools
import re
import typing

import numpy as np

from imgen.data import scenes

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
HUES = ("red", "yellow", "green", "cyan", "blue", "magenta")
COLOURS = HUES + ("white", "grey", "black")
SIZES = ("small", "medium", "large")
POSITIONS = (
  ("top left", "top", "top right"),
  ("left", "centre", "right"),
  ("bottom left", "bottom", "bottom right"),
)
POSITION_NAMES = tuple(p for row in POSITIONS for p in row)
_DIGITS = {w: k for k, w in enumerate(DIGIT_WORDS)} | {str(k): k for k in range(10)}
_SOURCE_NAMES = {
  "brick": "brick",
  "grass": "grass",
  "gravel": "gravel",
  "camera": "the cameraman",
  "coffee": "coffee",
  "chelsea": "a cat",
  "astronaut": "an astronaut",
  "rocket": "a rocket",
  "coins": "coins",
  "moon": "the moon",
  "text": "handwriting",  # Handwritten formulae on paper.
  "page": "a page",  # A printed page.
  "hubble_deep_field": "stars",
  "cell": "a cell",  # One cell under a microscope.
  "retina": "a retina",
}
BACKGROUND_NAMES = tuple(_SOURCE_NAMES[s.name] for s in scenes.BACKGROUNDS)

GREY_CHROMA = 64  # Max - min channel below this (of 255): black, grey or white.
DARK_VALUE = 90  # Max channel below this: black, whatever the hue.
BLACK_LUMINANCE, WHITE_LUMINANCE = 64, 192  # Achromatic: black below, white from.


class Digit(typing.NamedTuple):
  digit: int
  colour: str | None  # None: not said (a short prompt).
  size: str | None
  position: str | None


class Layout(typing.NamedTuple):
  background: str | None
  digits: tuple[Digit, ...]


def colour_name(rgb) -> str:
  """The name in `COLOURS` of an RGB colour (0..255, any number type)."""
  r, g, b = (float(v) for v in np.asarray(rgb, np.float64).reshape(3))
  high, low = max(r, g, b), min(r, g, b)
  if high - low < GREY_CHROMA:
    luminance = 0.299 * r + 0.587 * g + 0.114 * b
    return (
      "black" if luminance < BLACK_LUMINANCE else "grey" if luminance < WHITE_LUMINANCE else "white"
    )
  if high < DARK_VALUE:
    return "black"
  hue = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)[0]
  return HUES[int(hue * 6 + 0.5) % 6]


def size_name(side: float) -> str:
  """small (side < 30 px of 64), medium (< 37) or large."""
  return "small" if side < 30 else "medium" if side < 37 else "large"


def position_name(box) -> str:
  """The cell of the 3x3 grid of the 64x64 image holding the centre of a
  (top, left, height, width) box."""
  top, left, height, width = (float(v) for v in box)
  row, col = (min(int((a + s / 2) * 3 / scenes.SIZE), 2) for a, s in ((top, height), (left, width)))
  return POSITIONS[max(row, 0)][max(col, 0)]


def layout_of(example: dict) -> Layout:
  """The layout of a digit_scenes example (its `background`, `digits`, `boxes`, `colours`)."""
  digits = tuple(
    Digit(int(d), colour_name(colour), size_name(box[2]), position_name(box))
    for d, box, colour in zip(example["digits"], example["boxes"], example["colours"], strict=True)
    if d >= 0
  )
  return Layout(BACKGROUND_NAMES[int(example["background"])], digits)


def is_held_out(d: Digit) -> bool:
  """Whether a digit's (class, colour, position) triple is held out of training
  (False if its colour or position is not said)."""
  if d.colour is None or d.position is None:
    return False
  return (d.digit + 3 * COLOURS.index(d.colour) + 5 * POSITION_NAMES.index(d.position)) % 8 == 0


HELD_OUT_TRIPLES = frozenset(
  (d, c, p)
  for d in range(10)
  for c in COLOURS
  for p in POSITION_NAMES
  if is_held_out(Digit(d, c, None, p))
)

# Slots: {a} article, {digit}, {colour}, {size}, {at} "at the top left", {place}
# "top left"; [...] may be left out in a prompt (captions write everything).
DIGIT_TEMPLATES = {
  "train": (
    "{a} [{size}] [{colour}] {digit} [{at}]",  # a small red 3 at the top left
    "{a} [{colour}] {digit} [, {size} ,] [{at}]",  # a red 3, small, at the top left
    "[{at}] {a} [{size}] [{colour}] {digit}",  # at the top left a small red 3
    "{a} [{size}] {digit} [in {colour}] [{at}]",  # a small 3 in red at the top left
  ),
  "held_out": (
    "{place} : {a} [{size}] [{colour}] {digit}",  # top left: a small red 3
    "{a} [{size}] {digit} [, coloured {colour} ,] [{at}]",  # a small 3, coloured red, at the ...
  ),
}
JOINS = {"train": ("and", ",", "then"), "held_out": ("plus", "as well as")}
SCENE_TEMPLATES = {
  "train": (
    "{digits} on {background}",
    "{background} with {digits}",
    "{digits} over a background of {background}",
    "{digits} in front of {background}",
  ),
  "held_out": ("{digits} against {background}", "{background} behind {digits}"),
}
_PREPOSITIONS = {"top": ("at",), "bottom": ("at",), "left": ("on",), "right": ("on",)}
_PREPOSITIONS |= {"centre": ("in",)} | {p: ("at", "in") for p in POSITION_NAMES if " " in p}
_ARTICLES = ("a", "an", "the")
_SYNONYMS = {"center": "centre", "middle": "centre", "gray": "grey", "big": "large"}
_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
  """Lower-cased runs of word characters and single punctuation marks."""
  return _TOKEN.findall(text.lower())


def _detokenize(words) -> str:
  return "".join(w if not re.match(r"\w", w) else f" {w}" for w in words).strip()


@functools.cache
def _items(template: str) -> tuple:
  """A template as ("word", w) / ("slot", name) / ("opt", items) items."""
  stack = [[]]
  for part in re.findall(r"\[|\]|\{\w+\}|[^\s\[\]{}]+", template):
    if part == "[":
      stack.append([])
    elif part == "]":
      group = tuple(stack.pop())
      stack[-1].append(("opt", group))
    elif part.startswith("{"):
      stack[-1].append(("slot", part[1:-1]))
    else:
      stack[-1].append(("word", part))
  return tuple(stack[0])


def _write(items, fill) -> list[str]:
  out = []
  for kind, value in items:
    out += _write(value, fill) if kind == "opt" else [value] if kind == "word" else fill(value)
  return out


def caption(layout: Layout, rng: np.random.Generator, phrasing: str = "train") -> str:
  """A random caption of `layout` (every attribute said) in `phrasing`'s templates."""
  if phrasing not in SCENE_TEMPLATES:
    raise ValueError(f"Unknown phrasing {phrasing!r}; use one of {', '.join(SCENE_TEMPLATES)}.")
  names = (range(10), COLOURS, SIZES, POSITION_NAMES)
  complete = all(v in n for d in layout.digits for v, n in zip(d, names, strict=True))
  if not (layout.digits and complete and layout.background in BACKGROUND_NAMES):
    raise ValueError(f"caption needs a background and digits with every attribute: {layout}")
  choose = lambda options: options[int(rng.integers(len(options)))]

  def digit_phrase(d: Digit) -> list[str]:
    number = str(d.digit) if rng.integers(2) else DIGIT_WORDS[d.digit]
    slots = {"a": ["a"], "digit": [number], "colour": [d.colour], "size": [d.size]}
    slots |= {"place": d.position.split(), "at": [choose(_PREPOSITIONS[d.position]), "the"]}
    slots["at"] += slots["place"]
    return _write(_items(choose(DIGIT_TEMPLATES[phrasing])), slots.__getitem__)

  digits = digit_phrase(layout.digits[0])
  for d in layout.digits[1:]:
    digits += choose(JOINS[phrasing]).split() + digit_phrase(d)
  slots = {"digits": digits, "background": layout.background.split()}
  words = _write(_items(choose(SCENE_TEMPLATES[phrasing])), slots.__getitem__)
  an = [
    i + 1 < len(words) and w == "a" and words[i + 1] in ("8", "eight") for i, w in enumerate(words)
  ]
  return _detokenize("an" if a else w for w, a in zip(words, an, strict=True))


def max_caption_tokens(phrasing: str, num_digits: int = scenes.MAX_DIGITS) -> int:
  """The most tokens a caption of `num_digits` digits in `phrasing` can have."""
  longest = {"a": 1, "digit": 1, "colour": 1, "size": 1, "place": 2, "at": 4, "digits": 0}
  longest["background"] = max(len(b.split()) for b in BACKGROUND_NAMES)
  length = lambda t: len(_write(_items(t), lambda slot: [""] * longest[slot]))
  digit = max(map(length, DIGIT_TEMPLATES[phrasing]))
  join = max(len(j.split()) for j in JOINS[phrasing])
  scene = max(map(length, SCENE_TEMPLATES[phrasing]))
  return scene + num_digits * digit + (num_digits - 1) * join


def parse(text: str) -> Layout:
  """The layout a caption or a short prompt states (None for what it leaves
  out); ValueError if the grammar cannot read it, or reads it two ways."""
  toks = [_SYNONYMS.get(t, t) for t in tokens(text)]
  while toks and toks[-1] == ".":
    toks.pop()
  n = len(toks)

  def at(i: int, words) -> int | None:
    return i + len(words) if toks[i : i + len(words)] == list(words) else None

  def slot(name: str, i: int) -> list[tuple[int, typing.Any]]:
    t = toks[i] if i < n else None
    if name == "a":
      return [(i, None)] + ([(i + 1, None)] if t in _ARTICLES else [])
    if name == "digit":
      return [(i + 1, _DIGITS[t])] if t in _DIGITS else []
    if name in ("colour", "size"):
      return [(i + 1, t)] if t in (COLOURS if name == "colour" else SIZES) else []
    if name == "place":
      return [(j, p) for p in POSITION_NAMES if (j := at(i, p.split())) is not None]
    if name == "at":
      starts = [i + 1] + ([i + 2] if toks[i + 1 : i + 2] == ["the"] else [])
      return [m for s in starts for m in slot("place", s)] if t in ("at", "in", "on") else []
    if name == "background":
      out = []
      for b in BACKGROUND_NAMES:
        noun = b.split()[1:] if b.split()[0] in _ARTICLES else b.split()
        for words in [noun] + [[a, *noun] for a in _ARTICLES]:
          out += [(j, b)] if (j := at(i, words)) is not None else []
      return out
    return digit_lists(i)

  def match(items: tuple, i: int, found: dict):
    if not items:
      yield i, found
      return
    (kind, value), rest = items[0], items[1:]
    if kind == "word":
      yield from match(rest, i + 1, found) if i < n and toks[i] == value else ()
    elif kind == "opt":
      yield from match(value + rest, i, found)
      yield from match(rest, i, found)
    else:
      for j, v in slot(value, i):
        yield from match(rest, j, {**found, value: v})

  @functools.cache
  def phrases(i: int) -> frozenset:
    out = set()
    for template in (t for ts in DIGIT_TEMPLATES.values() for t in ts):
      for j, f in match(_items(template), i, {}):
        out.add((j, Digit(f["digit"], f.get("colour"), f.get("size"), f.get("at", f.get("place")))))
    return frozenset(out)

  @functools.cache
  def digit_lists(i: int) -> list:
    out = set()
    for j, d in phrases(i):
      out.add((j, (d,)))
      for join in _PARSED_JOINS:
        if (k := at(j, join)) is not None:
          out |= {(m, (d, *rest)) for m, rest in digit_lists(k)}
    return frozenset(out)

  layouts = set()
  for template in _PARSED_SCENES:
    for j, f in match(_items(template), 0, {}):
      if j == n:
        layouts.add(Layout(f.get("background"), f.get("digits", ())))
  if not layouts:
    raise ValueError(
      f"Cannot parse {text!r}: say digits such as 'a red 3 at the top' on a "
      f"background, one of {', '.join(BACKGROUND_NAMES)}."
    )
  unsaid = lambda x: (x.background is None) + sum(v is None for d in x.digits for v in d)
  fewest = min(map(unsaid, layouts))
  layouts = {x for x in layouts if unsaid(x) == fewest}
  if len(layouts) > 1:
    raise ValueError(f"{text!r} reads as several layouts: {list(layouts)}")
  return layouts.pop()


_PARSED_JOINS = sorted(
  {tuple(j.split()) for js in JOINS.values() for j in js} | {(",", "and"), (",", "then")}
)
_PARSED_SCENES = [t for ts in SCENE_TEMPLATES.values() for t in ts] + ["{digits}", "{background}"]


def _grammar_words() -> set[str]:
  words = {"the", "an", *_ARTICLES, *_DIGITS, *COLOURS, *SIZES}
  words |= {w for p in (*POSITION_NAMES, *BACKGROUND_NAMES) for w in p.split()}
  words |= {w for ps in _PREPOSITIONS.values() for w in ps} | {w for j in _PARSED_JOINS for w in j}
  for template in (t for ts in (*DIGIT_TEMPLATES.values(), *SCENE_TEMPLATES.values()) for t in ts):
    words |= set(_write(_items(template), lambda slot: []))
  return words


WORDS = tuple(sorted(_grammar_words()))  # Ids 1..len(WORDS); 0 is PAD.
PAD = 0
_IDS = {w: i + 1 for i, w in enumerate(WORDS)}
_BYTES = 1 + len(WORDS)  # Id of byte 0; byte b is _BYTES + b.
VOCAB_SIZE = _BYTES + 256
TOKEN_LENGTH = 56  # max_caption_tokens: 49 (train), 56 (held_out) with 4 digits.


def encode(text: str, length: int = TOKEN_LENGTH) -> np.ndarray:
  """int32 (length,) ids of `text`'s tokens, padded with PAD: the words
  `parse` reads as synonyms ("center", "gray", "big") become the grammar's own,
  and a final "." is dropped, so a prompt reaches the model as parse reads it."""
  words = [_SYNONYMS.get(t, t) for t in tokens(text)]
  while words and words[-1] == ".":
    words.pop()
  ids, unknown = [], False
  for word in words:
    if word in _IDS:
      ids.append(_IDS[word])
    else:
      ids += [_BYTES + ord(" ")] * unknown + [_BYTES + b for b in word.encode()]
    unknown = word not in _IDS
  if len(ids) > length:
    raise ValueError(f"{text!r} takes {len(ids)} tokens, more than length {length}; shorten it.")
  return np.array(ids + [PAD] * (length - len(ids)), np.int32)


def decode(ids) -> str:
  """The text of `encode`d ids (PAD dropped)."""
  words, run = [], bytearray()
  for i in [*map(int, np.asarray(ids).reshape(-1)), PAD]:
    if not 0 <= i < VOCAB_SIZE:
      raise ValueError(f"Token id {i} is outside the vocabulary 0..{VOCAB_SIZE - 1}.")
    if i >= _BYTES:
      run.append(i - _BYTES)
      continue
    if run:
      words += run.decode("utf-8", "replace").split(" ")
      run.clear()
    if i != PAD:
      words.append(WORDS[i - 1])
  return _detokenize(words)
