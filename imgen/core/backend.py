"""Which of a layer's exact forms runs: the one written for XLA's CPU backend, or XLA's own.

Some layers have two forms that compute the same values and gradients
(`imgen/models/layers.py`): XLA's own, and one rewritten because XLA's CPU
backend runs its own slowly (the weight gradients of convolutions, the
sub-pixel transposed convolutions, 2x2 max pooling as a reshape; BENCHMARKS.md
has the timings). On GPU and TPU, XLA hands its own forms to cuDNN or the
TPU's convolution units, and the rewrites would only add layout copies and
smaller kernels: there XLA's forms run unless measured better. This module is
the one place that decides; each layer asks `cpu_forms()` when it is traced.

`config.model.layer_forms`: 'auto' (the CPU forms on the CPU backend, XLA's
elsewhere), or 'cpu' / 'xla' on every backend, to compare the two.
"""

from collections.abc import Iterator
import contextlib

import jax

from imgen.core.errors import ConfigError

FORMS = ("auto", "cpu", "xla")
_chosen = "auto"


def check(forms: str) -> str:
  if forms not in FORMS:
    raise ConfigError(f"model.layer_forms={forms!r}; use one of {FORMS}.")
  return forms


def configure(forms: str) -> None:
  """Sets the forms the layers traced from now on take (a run's config)."""
  global _chosen
  _chosen = check(forms)


@contextlib.contextmanager
def layer_forms(forms: str) -> Iterator[None]:
  """The layers traced inside the block take `forms`; the previous choice after it."""
  global _chosen
  before, _chosen = _chosen, check(forms)
  try:
    yield
  finally:
    _chosen = before


def cpu_forms() -> bool:
  """True where the layers take the forms written for XLA's CPU backend."""
  if _chosen == "auto":
    return jax.default_backend() == "cpu"
  return _chosen == "cpu"
