"""GenEval-style checks of a scene's layout (Ghosh et al. 2023): per attribute and all-correct.

A layout is read cell by cell on the 3x3 grid: for each of the 9 cells whether
a digit is there (`present`, bool (N, 9)) and its `digit` (0-9), `colour`
(an index among the colour names) and `size` (among the size names), each
(N, 9) int, below `num_colours` and `num_sizes`; and the scene's
`background` (N,). An image passes an attribute
when the digits read and the digits asked can be paired one to one agreeing
in class and that attribute: the multisets of (class, attribute) are equal,
which `layout_checks` tests by their histograms (exact, and computable on a
device). `count` compares the numbers of digits, `digit` the multisets of
classes, `position` of (class, cell), `colour` of (class, colour), `size` of
(class, size); `background` the background; `all` every attribute at once,
(class, colour, size, cell) and the background. A prompt that leaves an
attribute out (`unsaid`) passes it for any reading.
"""

import typing

import jax.numpy as jnp
import numpy as np

NUM_CELLS = 9
NUM_DIGITS = 10
ATTRIBUTES = ("count", "digit", "colour", "position", "size", "background", "all")


class Reading(typing.NamedTuple):
  """Layouts cell by cell (arrays of numpy or jax)."""

  present: typing.Any  # bool (N, 9)
  digit: typing.Any  # int (N, 9); read only where present
  colour: typing.Any
  size: typing.Any
  background: typing.Any  # int (N,)


def _histogram(present, code, k: int):
  """(N, k) counts of `code` (N, 9) over the present cells."""
  onehot = code[..., None] == jnp.arange(k)
  return jnp.sum(onehot & present[..., None], axis=1)


def layout_checks(
  asked: Reading, read: Reading, num_colours: int, num_sizes: int
) -> dict[str, jnp.ndarray]:
  """Per image and attribute (`ATTRIBUTES`), whether `read` agrees with `asked`: bool (N,)."""
  cells = jnp.broadcast_to(jnp.arange(NUM_CELLS), asked.present.shape)

  def same(code, k):
    return jnp.all(
      _histogram(asked.present, code(asked, cells), k)
      == _histogram(read.present, code(read, cells), k),
      axis=-1,
    )

  d, k_colour, k_size = NUM_DIGITS, num_colours, num_sizes
  return {
    "count": jnp.sum(asked.present, -1) == jnp.sum(read.present, -1),
    "digit": same(lambda r, c: r.digit, d),
    "colour": same(lambda r, c: r.digit * k_colour + r.colour, d * k_colour),
    "position": same(lambda r, c: r.digit * NUM_CELLS + c, d * NUM_CELLS),
    "size": same(lambda r, c: r.digit * k_size + r.size, d * k_size),
    "background": asked.background == read.background,
    "all": same(
      lambda r, c: ((r.digit * k_colour + r.colour) * k_size + r.size) * NUM_CELLS + c,
      d * k_colour * k_size * NUM_CELLS,
    )
    & (asked.background == read.background),
  }


def scores(
  asked: Reading, read: Reading, num_colours: int, num_sizes: int, unsaid: np.ndarray | None = None
) -> dict[str, float]:
  """The share of images passing each attribute and all of them. Where a
  prompt leaves colour, size or background unsaid (`unsaid`, bool (N,
  len(ATTRIBUTES)), as `imgen.data.layouts.reading_of_layouts` gives it),
  both sides' values of it are set to 0 first, so the image is scored on the
  rest (per prompt: one digit without a colour drops colour for the prompt's
  other digits too)."""
  if unsaid is not None:

    def drop(r: Reading) -> Reading:
      off = lambda name: unsaid[:, ATTRIBUTES.index(name)]
      return r._replace(
        colour=np.where(off("colour")[:, None], 0, r.colour),
        size=np.where(off("size")[:, None], 0, r.size),
        background=np.where(off("background"), 0, r.background),
      )

    asked, read = drop(asked), drop(read)
  checks = layout_checks(asked, read, num_colours, num_sizes)
  return {name: float(np.mean(np.asarray(checks[name]))) for name in ATTRIBUTES}
