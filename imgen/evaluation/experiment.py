"""What every mode (train, eval, sample) builds from a config before any compile.

`Experiment.create(config)` checks the config, finds the data and builds the
family; its keys are the run's fixed random streams, derived from `seed` alone
so that every mode draws the same noise for the same purpose.
"""

from collections.abc import Iterator
import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np

from imgen import data
from imgen import families
from imgen.core import backend
from imgen.core import checkpoints
from imgen.core import files
from imgen.core import guards
from imgen.core import parallel
from imgen.core.errors import ConfigError
from imgen.data import VALID
from imgen.data import DataSpec
from imgen.families import Family
from imgen.methods import masks
from imgen.methods import metrics


def _validate(config: ml_collections.ConfigDict, builder) -> None:
  """Catches config values that would fail late or deep inside JAX."""
  positive = {
    "train.num_steps": config.train.num_steps,
    "train.batch_size": config.train.batch_size,
    "train.log_every": config.train.log_every,
    "train.checkpoint_every": config.train.checkpoint_every,
    "train.keep_checkpoints": config.train.keep_checkpoints,
    "train.steps_per_dispatch": config.train.steps_per_dispatch,
    "eval.grid_samples": config.eval.grid_samples,
    "eval.num_samples": config.eval.num_samples,
    "eval.batch_size": config.eval.batch_size,
    "eval.kid_subsets": config.eval.kid_subsets,
    "eval.kid_subset_size": config.eval.kid_subset_size,
    "eval.is_splits": config.eval.is_splits,
    "eval.pr_k": config.eval.pr_k,
  }
  for name, value in positive.items():
    if value < 1:
      raise ConfigError(f"{name}={value}; it must be a positive integer.")
  for name in ("every_steps", "sample_every"):  # 0: never while training (--mode=eval later).
    if config.eval[name] < 0:
      raise ConfigError(f"eval.{name}={config.eval[name]}; use a step count, or 0 for never.")
  data.pipeline.check_resize(config.data.resize)
  splits = sorted(builder.info.splits.keys())
  for field, split in (
    ("data.train_split", config.data.train_split),
    ("data.eval_split", config.data.eval_split),
    ("eval.reference_split", config.eval.reference_split),
    ("eval.real_split", config.eval.real_split),
  ):
    if split is not None and split not in splits:
      raise ConfigError(f"{field}={split!r}; {builder.name} has splits {splits}.")
  data.pipeline.check_seed(config.seed)
  names = metric_names(config.eval.metrics)
  if "is" in names and config.eval.num_samples < config.eval.is_splits:
    raise ConfigError(
      f"eval.num_samples={config.eval.num_samples} is fewer than eval.is_splits="
      f"{config.eval.is_splits}; the Inception Score needs one sample per split at least."
    )
  if "pr" in names and config.eval.num_samples <= config.eval.pr_k:
    raise ConfigError(f"eval.num_samples must exceed eval.pr_k={config.eval.pr_k}.")
  if config.train.on_nonfinite not in guards.NONFINITE_ACTIONS:
    raise ConfigError(
      f"train.on_nonfinite={config.train.on_nonfinite!r}; use one of {guards.NONFINITE_ACTIONS}."
    )
  if config.eval.best_mode not in ("min", "max"):
    raise ConfigError(f"eval.best_mode={config.eval.best_mode!r}; use 'min' or 'max'.")


def _check_masks(config, builder, spec: DataSpec, family) -> None:
  """Every mask value of the train and eval splits is one of the family's classes."""
  source = spec.fields[family.mask_field].source
  for split in {config.data.train_split, config.data.eval_split}:
    values = data.pipeline.field_values(builder, split, spec, source)
    masks.check_masks(config.data.name, split, values, family.num_mask_classes)


GRID_COLUMNS = 8  # Samples per row of a grid.


def _sample_classes(spec: str, family: Family) -> tuple[int, ...] | None:
  """`eval.classes` ('3,5' or '' for all) checked against the family's classes."""
  num_classes = family.num_classes if isinstance(family, families.Generates) else None
  if num_classes is None:
    if spec.strip():
      raise ConfigError(
        f"eval.classes={spec!r}: this model is unconditional, it cannot draw given classes. "
        "Train a conditional model (e.g. --config.model.conditional=true), or leave "
        "eval.classes empty."
      )
    return None
  try:
    classes = tuple(int(c) for c in spec.split(",") if c.strip())
  except ValueError:
    raise ConfigError(
      f"eval.classes={spec!r}; use comma-separated class numbers, e.g. '3,5'."
    ) from None
  bad = [c for c in classes if not 0 <= c < num_classes]
  if bad:
    raise ConfigError(f"eval.classes={spec!r} names {bad}; the classes are 0..{num_classes - 1}.")
  return classes or tuple(range(num_classes))


def metric_names(spec: str) -> tuple[str, ...]:
  """'fid,kid' -> ('fid', 'kid'); '' -> (); unknown names are a ConfigError."""
  names = tuple(n.strip() for n in spec.split(",") if n.strip())
  unknown = [n for n in names if n not in metrics.METRICS]
  if unknown:
    raise ConfigError(
      f"eval.metrics={spec!r} names {unknown}; known: {', '.join(metrics.METRICS)} "
      "(comma-separated, or '' for none)."
    )
  return names


@dataclasses.dataclass(frozen=True)
class Keys:
  init: jax.Array
  step: jax.Array
  sample: jax.Array  # The fixed noise of the sample grids.
  eval: jax.Array  # Held-out passes (VAE binarisation and IWAE draws).
  quality_samples: jax.Array  # The samples the sample-quality metrics score.
  kid_subsets: jax.Array

  @classmethod
  def from_seed(cls, seed: int) -> "Keys":
    init, step, sample, evaluation = jax.random.split(jax.random.key(seed), 4)
    quality = jax.random.fold_in(evaluation, 1)
    return cls(
      init, step, sample, evaluation, jax.random.fold_in(quality, 0), jax.random.fold_in(quality, 1)
    )


@dataclasses.dataclass(frozen=True)
class Experiment:
  config: ml_collections.ConfigDict
  builder: Any  # tfds.core.DatasetBuilder
  spec: DataSpec
  family: Family
  keys: Keys

  @classmethod
  def create(cls, config: ml_collections.ConfigDict) -> "Experiment":
    builder = data.get_builder(config.data.name, config.data.data_dir)
    _validate(config, builder)
    backend.configure(config.model.get("layer_forms", "auto"))  # Before anything is traced.
    spec = DataSpec.from_builder(builder, config.data.image_key, config.model.image_size)
    for name in ("train.batch_size", "eval.batch_size"):  # Fail before compiling.
      data.pipeline.per_process_batch_size(config[name.split(".")[0]].batch_size, name)
    family = families.create(config, spec)
    _sample_classes(config.eval.classes, family)  # Fail before compiling.
    if isinstance(family, families.Segments):
      _check_masks(config, builder, spec, family)
    return cls(config, builder, spec, family, Keys.from_seed(config.seed))

  @classmethod
  def of_run(
    cls, workdir: str, what: str, hint: str = "train it first.", family: str | None = None
  ) -> tuple["Experiment", Any, int]:
    """(experiment, state, step) of the newest checkpoint of the run in `workdir`,
    made from its own config.json: how a mode reads another trained run (the
    setting `what` names it; `family`, if given, is the family it must be)."""
    config = ml_collections.ConfigDict(files.run_config(workdir, what, hint, family))
    try:
      config.eval.checkpoint_step, config.eval.best = None, False
      experiment = cls.create(config)
    except (AttributeError, KeyError) as e:  # A config.json of an older imgen lacks fields.
      raise ConfigError(
        f"{what}={workdir} holds a run of an older imgen ({e}). Train it again with this one."
      ) from e
    state, step, _ = experiment.restore(workdir)
    return experiment, state, step

  def restore(self, workdir: str) -> tuple[Any, int, str | None]:
    """(state, step, folder) of the checkpoint in `workdir` that the eval config
    chooses for the modes other than training (see `imgen.modes`): the newest in
    checkpoints/, or `eval.checkpoint_step`, or with `eval.best` the one in best/;
    `eval.checkpoint_step=0` is the untrained model (folder None)."""
    c = self.config.eval
    if c.checkpoint_step == 0:
      return self.family.init_state(self.keys.init), 0, None
    folder = "best" if c.best else "checkpoints"
    hint = (
      f"Train into it first (python main.py --config=... --workdir={workdir}), or pass "
      "--config.eval.checkpoint_step=0 to use the untrained model."
    )
    if not (files.path(workdir) / folder).is_dir():
      raise ConfigError(f"{workdir} has no {folder}/ folder of checkpoints. {hint}")
    manager = checkpoints.make_manager(workdir, keep=1, create=False, folder=folder)
    try:
      available = sorted(manager.all_steps())
      step = available[-1] if c.checkpoint_step is None and available else c.checkpoint_step
      if step is None or step not in available:
        raise ConfigError(
          f"{workdir}/{folder} has no checkpoint of step {step}; it has {available or 'none'}."
          + ("" if available else f" {hint}")
        )
      target = checkpoints.restore_target(self.family.init_state, self.keys.init)
      return checkpoints.restore(manager, target, step), step, folder
    finally:
      manager.close()

  @property
  def sample_classes(self) -> tuple[int, ...] | None:
    """The classes a conditional family draws (`eval.classes`, default all);
    None for unconditional families."""
    return _sample_classes(self.config.eval.classes, self.family)

  def class_rows(self, num: int) -> np.ndarray | None:
    """The class of each of `num` samples: `sample_classes` in turn, each for a
    row of `GRID_COLUMNS` samples; None for unconditional families."""
    classes = self.sample_classes
    if classes is None:
      return None
    return np.asarray(classes, np.int32)[(np.arange(num) // GRID_COLUMNS) % len(classes)]

  def condition_rows(self, num: int) -> np.ndarray | None:
    """What each of `num` samples is drawn given: `class_rows`, or the rows of
    a family conditioned on other inputs (text, speech: `condition_rows`)."""
    family = self.family
    rows = family.condition_rows(num) if isinstance(family, families.Generates) else None
    return self.class_rows(num) if rows is None else rows

  def grid_size(self) -> int:
    """Samples per grid: `eval.grid_samples`, or one row per class (or prompt) when conditional."""
    classes = self.sample_classes
    if classes is None:
      family = self.family
      size = family.grid_size() if isinstance(family, families.Generates) else None
      return size or self.config.eval.grid_samples
    return GRID_COLUMNS * len(classes)

  @property
  def reference_split(self) -> str:
    return self.config.eval.reference_split or self.config.data.eval_split

  def eval_batches(self, split: str | None = None) -> Iterator[dict[str, np.ndarray]]:
    """One ordered, padded pass over `split` (default data.eval_split); see `data.VALID`."""
    return data.make_eval_iterator(
      self.builder,
      split=split or self.config.data.eval_split,
      spec=self.spec,
      resize=self.config.data.resize,
      global_batch_size=self.config.eval.batch_size,
    )

  def train_batches(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    """The batches of train steps `start_step`, ...: data batches k*s ... k*s + k - 1
    stacked on axis 1 for families that take k = `batches_per_step` per step."""
    k = self.family.batches_per_step
    batches = data.make_train_iterator(
      self.builder,
      split=self.config.data.train_split,
      spec=self.spec,
      resize=self.config.data.resize,
      global_batch_size=self.config.train.batch_size,
      seed=self.config.seed,
      start_step=start_step * k,
      num_threads=self.config.data.get("num_threads"),
    )
    if k == 1:
      return batches
    return (
      jax.tree.map(lambda *xs: np.stack(xs, axis=1), *group)
      for group in iter(lambda: [next(batches) for _ in range(k)], None)
    )

  def held_out(self, num: int) -> dict[str, np.ndarray]:
    """The first `num` examples of data.eval_split, every field, on the host
    (the same on every process: all of them must call it)."""
    parts = []
    for batch in self.eval_batches():
      batch = {k: parallel.gather(v.reshape((-1,) + v.shape[2:])) for k, v in batch.items()}
      rows = batch[VALID] > 0
      parts.append({k: v[rows] for k, v in batch.items() if k != VALID})
      if sum(len(p["image"]) for p in parts) >= num:
        break
    return {k: np.concatenate([p[k] for p in parts])[:num] for k in parts[0]}
