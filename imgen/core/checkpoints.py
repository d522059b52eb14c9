"""Orbax checkpoints of the (unreplicated) train state.

Orbax writes a checkpoint into a temporary folder and renames it when it is
complete, and deletes old checkpoints only after a new one is committed, so a
crash never leaves a half-written checkpoint under a step's name nor the
workdir without an intact one. A committed checkpoint whose files were damaged
later fails to restore: `restore_latest` then moves it to `workdir/damaged/`,
warns, and falls back to the next newest.
"""

from collections.abc import Callable
import datetime
import math
import os
import re
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp

from imgen.core import files
from imgen.core.errors import ConfigError
from imgen.core.errors import one_line


def make_manager(
  workdir: str, *, keep: int, create: bool = True, folder: str = "checkpoints"
) -> ocp.CheckpointManager:
  """Keeps the newest `keep` checkpoints in `workdir/folder`, written asynchronously."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep,
    enable_async_checkpointing=True,
    create=create,
    cleanup_tmp_directories=create,  # Leftovers of a save that a crash cut short.
    # Orbax names its cross-process barriers after the step; the managers of
    # checkpoints/ and best/ save the same step concurrently, and without their
    # own prefixes their barriers collided and a 2-process run could hang.
    multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=folder),
  )
  if create:
    files.path(workdir).mkdir(parents=True, exist_ok=True)
  directory = files.path(workdir) / folder
  return ocp.CheckpointManager(
    directory.resolve() if files.is_local(directory) else directory,
    options=options,
    item_handlers=ocp.StandardCheckpointHandler(),
  )


def restore_target(init_state: Callable[[jax.Array], Any], key: jax.Array) -> Any:
  """What a checkpoint is restored into: the shapes and dtypes of `init_state(key)`, on
  this process's first device, as a restore needs them. Nothing is computed or compiled:
  only traced (a U-Net's initialisation compiled and run took seconds of every mode's
  start, and of every resumed run's)."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
    jax.eval_shape(init_state, key),
  )


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Starts writing `state` as `step` (the caller decides when to save)."""
  manager.save(step, args=ocp.args.StandardSave(state), force=True)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return {jax.tree_util.keystr(p, simple=True, separator="."): tuple(x.shape) for p, x in leaves}


def _params_first(name: str) -> tuple:
  return (".opt_state." in name, ".batch_stats." in name, name)


def _differences(saved: dict, wanted: dict, limit: int = 6) -> list[str]:
  lines = [
    f"{name}: checkpoint {saved.get(name, 'absent')}, config {wanted.get(name, 'absent')}"
    for name in sorted(set(saved) | set(wanted), key=_params_first)
    if saved.get(name) != wanted.get(name)
  ]
  return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


def restore(manager: ocp.CheckpointManager, target: Any, step: int) -> Any:
  """The checkpoint of `step`, shaped like `target`.

  A checkpoint whose arrays do not fit `target` (another model's shapes) is a
  `ConfigError` that lists what differs.
  """
  saved = {m.name: tuple(m.shape) for m in jax.tree.leaves(manager.item_metadata(step))}
  differences = _differences(saved, _shapes(target))
  if differences:
    raise ConfigError(
      f"The checkpoint of step {step} in {manager.directory} was made by a different model:\n  "
      + "\n  ".join(differences)
      + "\nUse a new --workdir, or the config that made this one (config.json beside it; a "
      "checkpoint of an older imgen may need that version)."
    )
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  try:
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))
  except ValueError as e:
    # The same arrays in another tree: a field without arrays (an empty dict) added or
    # removed since the checkpoint was written. Orbax names what differs.
    if _STRUCTURE_MISMATCH not in str(e):
      raise
    differences = [  # The arrays are the same: what differs holds none.
      f"{name}: checkpoint {_presence(disk)}, config {_presence(ours)}"
      for name, ours, disk in _STRUCTURE_LINES.findall(str(e))
    ]
    raise ConfigError(
      f"The checkpoint of step {step} in {manager.directory} has other fields than this "
      f"config's state:\n  "
      + "\n  ".join(differences or [one_line(e)])
      + "\nUse a new --workdir, or the config and imgen version that made this one."
    ) from e


# Orbax's error for a restore target whose tree differs from the checkpoint's, and its
# lines per field: 'name:', '- Source: <the target's>', '- Target: <the checkpoint's>'.
_STRUCTURE_MISMATCH = "tree structures do not match"
_STRUCTURE_LINES = re.compile(r"^(\S[^\n]*):\n\s+- Source: ([^\n]*)\n\s+- Target: ([^\n]*)$", re.M)


def _presence(orbax_value: str) -> str:
  return "absent" if orbax_value == "MISSING" else "empty"


def _quarantine(manager: ocp.CheckpointManager, step: int) -> str:
  """Moves the checkpoint of `step` out of the manager's folder; returns where to."""
  directory = files.path(manager.directory)
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  target = directory.parent / "damaged" / f"{step}-{stamp}"
  if jax.process_index() == 0:
    target.parent.mkdir(parents=True, exist_ok=True)
    (directory / str(step)).rename(target)
  manager.reload()
  return os.fspath(target)


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> tuple[Any, int | None]:
  """(state, step) of the newest intact checkpoint, or (target, None) if there is none.

  A checkpoint that fails to read is moved to `damaged/` with a warning and the
  next newest is tried; if there were checkpoints but none is intact, that is a
  `ConfigError` (a run must not silently start over).
  """
  damaged = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      return restore(manager, target, step), step
    except ConfigError:
      raise
    except Exception as e:  # Orbax and TensorStore raise many types for damaged files.
      reason = one_line(e)
      moved = _quarantine(manager, step)
      damaged.append(moved)
      logging.warning(
        "The checkpoint of step %d is damaged (%s); moved it to %s and trying an older one.",
        step,
        reason,
        moved,
      )
  if damaged:
    raise ConfigError(
      f"No intact checkpoint in {manager.directory}: the damaged ones are in "
      f"{os.path.dirname(damaged[0])}. Start over in a new --workdir (or delete "
      f"{manager.directory} to start over here)."
    )
  return target, None


class BestCheckpoint:
  """Keeps the checkpoint with the best `metric` so far in `workdir/best/`.

  `best/best.json` records the metric, its value and the step; a resumed run
  reads it, so "best" spans the whole run.
  """

  def __init__(self, workdir: str, metric: str, mode: str):
    self.metric, self.mode = metric, mode
    self.manager = make_manager(workdir, keep=1, folder="best")
    self.record_path = files.path(workdir) / "best" / "best.json"
    self.record = None
    if self.record_path.is_file():
      record = files.read_json(self.record_path)
      if record.get("metric") == metric and record.get("mode") == mode:
        self.record = record

  def _better(self, value: float) -> bool:
    if not math.isfinite(value):
      return False
    if self.record is None:
      return True
    best = self.record["value"]
    return value < best if self.mode == "min" else value > best

  def update(self, step: int, metrics: dict[str, float], state: Any) -> bool:
    """Saves `state` if `metrics[metric]` beats the best so far; True if it did."""
    if self.metric not in metrics or not self._better(metrics[self.metric]):
      return False
    self.manager.save(step, args=ocp.args.StandardSave(state), force=True)
    self.manager.wait_until_finished()  # The record names only a finished checkpoint.
    self.record = {"metric": self.metric, "mode": self.mode, "value": metrics[self.metric]}
    self.record["step"] = step
    if jax.process_index() == 0:
      files.write_json(self.record_path, self.record)
    return True

  @property
  def value(self) -> float | None:
    return self.record and self.record["value"]

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def describe(step: int, folder: str | None) -> str:
  if folder is None:
    return "the untrained model (step 0)"
  return f"the checkpoint of step {step}" + (" (best/)" if folder == "best" else "")
