"""The family contract: what a model family gives the trainer and the modes.

A family is a class built from `(config, spec)` (the config and the
dataset's `DataSpec`) that derives from `Family` and from each capability it
has; a missing method is an error when the class is instantiated, and the
trainer and the modes ask `isinstance(family, Evaluates)` (or `Generates`)
instead of looking for `None`.

- `Family` (all): `init_state(key)`, a per-replica `make_train_step()`,
  `headline(metrics)` for the progress line, and `show(state, key, batch)`,
  the images it draws for a held-out batch (every field of the batch).
  `batches_per_step` (default 1): data batches one train step consumes (a
  GAN's critic steps); with k > 1 each field of the step's batch has a
  leading axis of k consecutive batches.
- `Evaluates`: a per-replica `make_eval_step()` whose sums over the held-out
  split `summarize_eval(sums)` turns into scalars and images.
- `Generates`: per-replica `generate(state, key, n, condition=None)`, the
  samples that the grids and the sample-quality metrics (FID, KID, IS, PR)
  are made of. Class-conditional families set `num_classes`: they are given
  the class of every sample (`eval.classes`, one class per grid row) and are
  scored for conditional accuracy too.
- `Inpaints`: per-replica `inpaint(state, key, images, known, condition,
  config)`, completions of images where `known` is 0 (`--mode=inpaint`).
- `Segments`: `segment(state, images)`, per-pixel labels of images of any
  size (`--mode=segment`), for a family trained on the dataset's masks
  (`mask_field`, values 0 .. `num_mask_classes` - 1, checked on every split
  before anything compiles), and `features(state, images)`, its feature space
  (FID of generated scenes in `--mode=compose` and `--mode=prompts`).

Per-replica functions run under `jax.pmap` with axis `parallel.AXIS`: they
average (`lax.pmean`) or sum (`lax.psum`) over it themselves, and draw their
randomness with `parallel.global_draw` so that any number of devices computes
the same thing. The state is a pytree (a `flax.struct.dataclass`) with a
scalar `step`, saved whole in each checkpoint.
"""

import abc
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from imgen.core.errors import ConfigError
from imgen.data.spec import DataSpec

State = Any  # A pytree with an integer `step`.
Batch = dict[str, jax.Array]  # Field name -> (rows on this replica, ...).
Metrics = dict[str, jax.Array]
TrainStep = Callable[[State, Batch, jax.Array], tuple[State, Metrics]]
EvalStep = Callable[[State, Batch, jax.Array], Metrics]


class Family(abc.ABC):
  """Builds a model's state, train step and images from a config."""

  batches_per_step: int = 1

  @abc.abstractmethod
  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    """Checks the config (a `ConfigError` for a bad value) before anything compiles."""

  @abc.abstractmethod
  def init_state(self, key: jax.Array) -> State:
    """The state at step 0, initialised from `key`."""

  @abc.abstractmethod
  def make_train_step(self) -> TrainStep:
    """Per-replica `train_step(state, batch, key) -> (state, metrics)`.

    `key` is the run's fixed step key: fold in `state.step` for this step's
    randomness. Metrics are scalars that are the same on every replica (the
    trainer reads replica 0's and checks them for NaN and infinities).
    """

  @abc.abstractmethod
  def headline(self, metrics: dict[str, float]) -> dict[str, float]:
    """The few train metrics worth a place on the progress line, by label."""

  @abc.abstractmethod
  def show(
    self, state: State, key: jax.Array, batch: dict[str, np.ndarray]
  ) -> dict[str, np.ndarray]:
    """Named batches of [-1, 1] images (N, H, W, C) for TensorBoard and PNG
    grids, made from an unreplicated `state` and a held-out host `batch` of
    every field; families that generate get their samples drawn for them."""


class Evaluates(abc.ABC):
  """A family with a held-out evaluation (likelihood, accuracy, ...)."""

  @abc.abstractmethod
  def make_eval_step(self) -> EvalStep:
    """Per-replica `eval_step(state, batch, key) -> sums`: sums over the rows
    whose `batch[data.VALID]` is 1, already summed over the devices (`psum`)."""

  @abc.abstractmethod
  def summarize_eval(
    self, sums: dict[str, np.ndarray]
  ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The held-out split's totals -> (scalars, images) to log."""


class Generates(abc.ABC):
  """A family that makes images (samples for grids and sample-quality metrics)."""

  num_classes: int | None = None  # Set by class-conditional families.
  # What families drawn given more than a class read: 'text' (token ids) or
  # 'speech' (clips); None for class-conditional and unconditional ones.
  condition_kind: str | None = None

  def condition_rows(self, num: int) -> np.ndarray | None:
    """The condition of each of `num` samples of the grids and `--mode=sample`
    for families with a `condition_kind`; None: class rows (`eval.classes`) or
    no condition."""
    del num
    return None

  def grid_size(self) -> int | None:
    """Samples per grid when the family decides it (one row per prompt); None:
    `eval.grid_samples`, or one row per class for class-conditional families."""
    return None

  @abc.abstractmethod
  def generate(
    self, state: State, key: jax.Array, n: int, condition: jax.Array | None = None
  ) -> jax.Array:
    """Per replica: this replica's `n` rows of one global batch of samples in
    [-1, 1] drawn from `key` (the same samples on any number of devices).
    `condition` holds this replica's `n` conditioning rows (class labels) for
    conditional families; unconditional ones reject it."""


class Inpaints(abc.ABC):
  """A family that completes images where a mask says pixels are unknown (`--mode=inpaint`)."""

  @abc.abstractmethod
  def inpaint(
    self,
    state: State,
    key: jax.Array,
    images: jax.Array,
    known: jax.Array,
    condition: jax.Array | None,
    config: ml_collections.ConfigDict,
  ) -> jax.Array:
    """Per replica: completions of this replica's rows of a global batch of
    `images` (in [-1, 1]) that keep the pixels where `known` (the images'
    shape, 1 = given) exactly; `config` is the `inpaint` group."""


class Segments(abc.ABC):
  """A family that labels every pixel (`--mode=segment`)."""

  mask_field: str  # The batch field of the true masks.
  num_mask_classes: int
  class_names: tuple[str, ...]

  @abc.abstractmethod
  def segment(self, state: State, images: jax.Array) -> np.ndarray:
    """Labels (N, H, W) of [-1, 1] images (N, H, W, C) of any size, from an
    unreplicated `state`, on the host."""

  @abc.abstractmethod
  def features(self, state: State, images: jax.Array) -> np.ndarray:
    """(N, D) float64 features of [-1, 1] images from an unreplicated `state`:
    the space in which the modes that judge generated scenes score FID."""


def class_count(config: ml_collections.ConfigDict, spec: DataSpec) -> int | None:
  """The dataset's classes when `model.conditional` is set, else None; a
  ConfigError when a conditional model is asked of data without labels."""
  if not config.model.conditional:
    return None
  if spec.num_classes is None:
    raise ConfigError(
      f"model.conditional=True needs class labels, and {config.data.name} has no "
      "ClassLabel feature 'label'."
    )
  return spec.num_classes


def reject_condition(family: str, condition: jax.Array | None) -> None:
  """For unconditional families: conditioning is a mistake, not something to ignore."""
  if condition is not None:
    raise ConfigError(f"The {family} family is unconditional: it cannot draw given labels.")
