"""What keeps a run's work safe: stop signals and non-finite updates.

- `StopSignals`: SIGTERM (what schedulers send before preempting) and Ctrl-C
  ask the loop to stop after the current step; the loop then checkpoints,
  flushes its logs and returns. A second Ctrl-C interrupts at once. Of several
  processes, JAX's preemption service catches SIGTERM in any of them and they
  agree on the step to stop after (`jax.experimental.multihost_utils.
  reached_preemption_sync_point`, asked once per device call by every process).
- `guard_nonfinite(step)`: inside the compiled step, an update whose metrics
  (losses, gradient norms) are not all finite is not applied; the step reports
  it as `nonfinite`. The host sees it when it next fetches metrics (logging,
  checkpointing), so there is no extra sync per step.
"""

from collections.abc import Callable
import signal
import threading

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from imgen.core.errors import UserError

NONFINITE_ACTIONS = ("stop", "skip")


class Diverged(UserError):
  """The loss or gradients stopped being finite."""


class StopSignals:
  """Context manager: records SIGTERM / SIGINT instead of dying mid-step."""

  def __init__(self):
    self.received: str | None = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.received:
      raise KeyboardInterrupt  # Second Ctrl-C: stop now.
    self.received = signal.Signals(signum).name

  def __enter__(self) -> "StopSignals":
    # Several hosts: JAX's preemption service owns SIGTERM; signals only work in the main thread.
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def requested(self, counter: int) -> str | None:
    """Why to stop now (a signal's name, 'preemption'), or None.

    `counter` must grow by exactly 1 per call and be the same on every process
    (the loop passes its first step plus the device calls so far, which is the
    step when each call runs one step): JAX's sync point is a value of it.
    """
    if self.received:
      return self.received
    if jax.process_count() > 1 and multihost_utils.reached_preemption_sync_point(counter):
      return "preemption"
    return None


def guard_nonfinite(train_step: Callable) -> Callable:
  """Wraps a per-replica step: a non-finite update leaves the state as it was
  (but for the step counter) and sets metrics['nonfinite'] to 1."""

  def guarded(state, batch, key):
    new_state, metrics = train_step(state, batch, key)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)]))
    kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    return kept.replace(step=new_state.step), {**metrics, "nonfinite": 1.0 - finite}

  return guarded


def nonfinite_report(host_metrics: list[dict], first_step: int) -> tuple[list[int], str]:
  """(steps whose update was not applied, what was not finite at the first of them).

  `host_metrics` are the fetched per-step metrics (replica 0) of the steps
  `first_step`, `first_step + 1`, ...
  """
  bad = [first_step + i for i, m in enumerate(host_metrics) if m["nonfinite"][0] > 0]
  if not bad:
    return [], ""
  metrics = host_metrics[bad[0] - first_step]
  culprits = [
    f"{k}={float(v[0])}" for k, v in metrics.items() if k != "nonfinite" and not np.isfinite(v[0])
  ]
  return bad, ", ".join(culprits)
