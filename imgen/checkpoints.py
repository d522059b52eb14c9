"""Orbax checkpoints of the (unreplicated) train state."""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def make_manager(workdir: str, *, keep: int) -> ocp.CheckpointManager:
  """Keeps the newest `keep` checkpoints of `workdir`, written asynchronously."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep,
    enable_async_checkpointing=True,
    create=True,
  )
  return ocp.CheckpointManager(
    os.path.abspath(os.path.join(workdir, "checkpoints")), options=options
  )


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Starts writing `state` as `step` (the caller decides when to save)."""
  manager.save(step, args=ocp.args.StandardSave(state), force=True)


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> tuple[Any, int | None]:
  """(state, step) of the newest checkpoint, or (target, None) if there is none."""
  step = manager.latest_step()
  if step is None:
    return target, None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract)), step
