"""The shape of a mode, and the skeleton every mode on a trained run shares.

A mode on a trained run is one function `run(experiment, restore)` -> (record,
path): `experiment` is the config made into data, family and keys; `restore()`
returns the `Run` (the checkpoint the eval config chooses: the newest, or
`eval.checkpoint_step`, or with `eval.best` the one in best/), called once the
mode has checked what it can check without it; `record` is JSON-able and `path`
where it goes. `on_checkpoint` builds the experiment, calls the mode, and
writes the record on process 0, so no mode does any of that itself. Modes that
make or read runs on their own terms (`train`, `compose`) take (config, workdir).
"""

from collections.abc import Callable
import dataclasses
from typing import Any

from absl import logging
import jax
import ml_collections

from imgen.core import checkpoints
from imgen.core import files
from imgen.evaluation.experiment import Experiment


@dataclasses.dataclass(frozen=True)
class Run:
  """A trained run's checkpoint, restored for a mode."""

  workdir: str
  state: Any  # Unreplicated.
  step: int
  folder: str | None  # 'checkpoints', 'best', or None for the untrained model.

  @property
  def name(self) -> str:
    """'step0001600' ('-best' for best/): how the modes name their outputs."""
    return f"step{self.step:07d}" + ("-best" if self.folder == "best" else "")

  @property
  def description(self) -> str:
    return checkpoints.describe(self.step, self.folder)


@dataclasses.dataclass(frozen=True)
class Restore:
  """`restore()`: the `Run` of the checkpoint the eval config chooses in `workdir`."""

  experiment: Experiment
  workdir: str

  def __call__(self) -> Run:
    return Run(self.workdir, *self.experiment.restore(self.workdir))


OnCheckpoint = Callable[[Experiment, Restore], tuple[dict, str]]


@dataclasses.dataclass(frozen=True)
class Mode:
  """A `--mode`: either `on_checkpoint` (a mode on one trained run, run through
  `run_on_checkpoint`) or `on_config` (config, workdir) -> anything."""

  help: str
  needs_run: bool  # Works on the --workdir of an earlier run: no default workdir.
  on_checkpoint: OnCheckpoint | None = None
  on_config: Callable[[ml_collections.ConfigDict, str], Any] | None = None

  def __call__(self, config: ml_collections.ConfigDict, workdir: str) -> Any:
    if self.on_checkpoint is not None:
      return run_on_checkpoint(self.on_checkpoint, config, workdir)
    return self.on_config(config, workdir)


def run_on_checkpoint(mode: OnCheckpoint, config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The skeleton of every mode on a trained run: the experiment, the mode
  (which restores the chosen checkpoint when it is ready for it), its record
  written as JSON on process 0. Returns the record."""
  experiment = Experiment.create(config)
  record, path = mode(experiment, Restore(experiment, workdir))
  if jax.process_index() == 0:
    files.write_json(path, record)
  logging.info("Wrote %s", path)
  return record
