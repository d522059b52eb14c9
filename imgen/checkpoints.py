"""Orbax checkpoints of the (unreplicated) train state."""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from imgen.errors import ConfigError


def make_manager(workdir: str, *, keep: int) -> ocp.CheckpointManager:
  """Keeps the newest `keep` checkpoints of `workdir`, written asynchronously."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep,
    enable_async_checkpointing=True,
    create=True,
  )
  os.makedirs(workdir, exist_ok=True)
  return ocp.CheckpointManager(
    os.path.abspath(os.path.join(workdir, "checkpoints")),
    options=options,
    item_handlers=ocp.StandardCheckpointHandler(),
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


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> tuple[Any, int | None]:
  """(state, step) of the newest checkpoint, or (target, None) if there is none.

  A checkpoint whose arrays do not fit `target` (another model's shapes) is a
  `ConfigError` that lists what differs.
  """
  step = manager.latest_step()
  if step is None:
    return target, None
  saved = {m.name: tuple(m.shape) for m in jax.tree.leaves(manager.item_metadata(step))}
  differences = _differences(saved, _shapes(target))
  if differences:
    raise ConfigError(
      f"The checkpoint of step {step} in {manager.directory} was made by a different model:\n  "
      + "\n  ".join(differences)
      + "\nUse a new --workdir, or the config that made this one (config.json beside it)."
    )
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract)), step
