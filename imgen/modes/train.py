"""The training loop every family shares: data, pmap'd step, logs, checkpoints.

It knows a family only through the contract of `imgen.families.base`: the
state, the per-replica train step, `headline`, `show`, and the capabilities
`Evaluates` and `Generates` (through `imgen.evaluation.evaluate`).
"""

from collections.abc import Callable, Iterator, Sequence
import os
import time

from absl import logging
import jax
from jax import lax
import ml_collections
import numpy as np

from imgen import data
from imgen.core import checkpoints
from imgen.core import guards
from imgen.core import parallel
from imgen.core import writers
from imgen.evaluation.evaluate import Evaluator
from imgen.evaluation.evaluate import host_samples
from imgen.evaluation.experiment import Experiment


def _mean_metrics(host: list[dict]) -> dict[str, float]:
  """Averages fetched per-step metrics (replica 0; they are pmean'd) over the
  steps whose update was applied."""
  applied = [m for m in host if m["nonfinite"][0] == 0] or host
  return {k: float(np.mean([m[k][0] for m in applied])) for k in host[0] if k != "nonfinite"}


def dispatch_sizes(start: int, end: int, every: Sequence[int], k: int) -> Iterator[int]:
  """Steps per device call from step `start` to `end`: `k` (one scanned call)
  when no step of a multiple of `every` falls before the call's last step,
  else 1, so logs, checkpoints and evaluations happen at the steps they name."""
  step = start
  while step < end:
    boundary = min([end] + [(step // e + 1) * e for e in every])
    n = k if boundary - step >= k else 1
    yield n
    step += n


def scan_steps(step_fn: Callable) -> Callable:
  """`step_fn(state, batch, key)` over a leading axis of batches, in one call.

  Runs `train.steps_per_dispatch` steps per device call: the same steps in the
  same order, with metrics stacked along the scanned axis. The loop is rolled,
  so a call of k steps compiles about as fast as one step: every trained
  convolution writes its weight gradient in the form XLA's CPU backend runs
  fast inside loops too (`imgen/models/layers.py`; XLA's own form there was
  ~20x slower, which is why this loop was once unrolled on CPU).
  """

  def steps(state, batches, key):
    body = lambda state, batch: step_fn(state, batch, key)
    return lax.scan(body, state, batches)

  return steps


def stack_steps(batches: Iterator[dict], sizes: Iterator[int]) -> Iterator[dict]:
  """Per-step batches (devices, b, ...) -> one (devices, n, b, ...) per call of n steps."""
  for n in sizes:
    if n == 1:
      yield next(batches)
    else:
      group = [next(batches) for _ in range(n)]
      yield jax.tree.map(lambda *xs: np.stack(xs, axis=1), *group)


def _per_step(host: list[tuple[int, dict]]) -> list[dict]:
  """Fetched metrics of calls of n steps (leaves (devices, n)) -> one dict per step."""
  out = []
  for n, metrics in host:
    if n == 1:
      out.append(metrics)
    else:
      out.extend({k: v[:, i] for k, v in metrics.items()} for i in range(n))
  return out


def _save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config.family` in `workdir`, resuming from its newest checkpoint.

  Returns the last logged metrics.
  """
  experiment = Experiment.create(config)
  family, keys = experiment.family, experiment.keys
  state = family.init_state(keys.init)
  manager = checkpoints.make_manager(workdir, keep=config.train.keep_checkpoints)
  state, restored = checkpoints.restore_latest(manager, state)
  start_step = int(state.step)
  if restored is not None:
    logging.info("Resuming from the checkpoint of step %d in %s", restored, workdir)
  if jax.process_index() == 0:  # After the restore: config.json describes the checkpoints.
    _save_config(config, workdir)
  num_steps = config.train.num_steps
  if start_step >= num_steps:
    logging.info("Already trained to step %d (train.num_steps=%d).", start_step, num_steps)
    manager.close()
    return {}

  evaluator = Evaluator(experiment, required=False)
  held_out = experiment.held_out(config.eval.grid_samples)
  every = (
    config.train.log_every,
    config.train.checkpoint_every,
    config.eval.sample_every,
    config.eval.every_steps,
  )
  per_call = config.train.steps_per_dispatch
  sizes = lambda: dispatch_sizes(start_step, num_steps, every, per_call)
  batches = data.prefetch_to_device(stack_steps(experiment.train_batches(start_step), sizes()))
  guarded_step = guards.guard_nonfinite(family.make_train_step())
  train_calls = {1: parallel.pmap_step(guarded_step, donate=True)}  # By steps per call.
  if per_call > 1:  # Each compiles on first use.
    train_calls[per_call] = parallel.pmap_step(scan_steps(guarded_step), donate=True)
  replicated = parallel.replicate(state)
  writer = writers.Writer(workdir, enabled=jax.process_index() == 0)
  best = checkpoints.BestCheckpoint(workdir, config.eval.best_metric, config.eval.best_mode)
  progress = writers.Progress(start_step, num_steps)
  buffer, metrics, eval_metrics, skipped = [], {}, {}, 0
  warned = []  # Whether the missing best metric was reported.

  def host_state():
    return jax.device_get(parallel.unreplicate(replicated))

  def write_images(step: int) -> None:
    images = {}
    if evaluator.sampler is not None:
      num = experiment.grid_size()  # One row per class for conditional families.
      images["samples"] = host_samples(evaluator.sampler(replicated, keys.sample, num), num)
    images.update(family.show(host_state(), keys.sample, held_out))
    paths = writer.images(step, images)
    if paths:
      logging.info("Wrote %s", ", ".join(paths))

  def evaluate(step: int) -> dict[str, float]:
    """Held-out and sample-quality metrics; logs them, keeps the best checkpoint."""
    if not evaluator.active:
      return {}
    results, images = evaluator(replicated)
    writer.images(step, images)
    logging.info(
      "eval at step %d | %s", step, " | ".join(f"{k} {v:.4g}" for k, v in results.items())
    )
    writer.scalars(step, results)
    unprefixed = {k.split("/", 1)[1]: v for k, v in results.items()}
    if best.update(step, unprefixed, host_state()):
      logging.info("Best %s so far (%.4g): step %d, kept in best/", best.metric, best.value, step)
    elif best.metric not in unprefixed and not warned:
      warned.append(best.metric)
      logging.warning(
        "eval.best_metric=%r is not among the eval results %s; no best checkpoint is kept.",
        best.metric,
        sorted(unprefixed),
      )
    return results

  def checkpoint(step: int) -> None:
    checkpoints.save(manager, step, host_state())

  logging.info(
    "Training %s from step %d to %d; workdir %s", config.family, start_step, num_steps, workdir
  )

  def check_finite(host: list[dict], step: int) -> int:
    """Stops the run (train.on_nonfinite='stop') or counts the skipped updates."""
    bad, culprits = guards.nonfinite_report(host, step - len(host) + 1)
    if bad and config.train.on_nonfinite == "stop":
      raise guards.Diverged(
        f"Non-finite {culprits} at step {bad[0]}: that update was not applied and the run "
        f"stopped. The newest checkpoint (step {manager.latest_step()}) is from before it. "
        "Lower the learning rate, or set --config.train.on_nonfinite=skip to skip such updates."
      )
    if bad:
      logging.warning(
        "Skipped %d non-finite updates at steps %s (first: %s).", len(bad), bad[:10], culprits
      )
    return len(bad)

  with guards.StopSignals() as stops:
    try:
      step = start_step
      for calls, n in enumerate(sizes(), start=1):
        batch, train_step = next(batches), train_calls[n]
        step += n
        if step == start_step + n:
          t = time.perf_counter()
          replicated, step_metrics = train_step(replicated, batch, keys.step)
          jax.block_until_ready(step_metrics)
          logging.info(
            "First call (%d step%s, compile included) took %.1fs",
            n,
            "s" if n > 1 else "",
            time.perf_counter() - t,
          )
          progress.start(step)
        else:
          replicated, step_metrics = train_step(replicated, batch, keys.step)
        buffer.append((n, step_metrics))

        stop = stops.requested(start_step + calls)
        last = step == num_steps
        save = step % config.train.checkpoint_every == 0 or last or stop
        if step % config.train.log_every == 0 or save:  # Never save before checking for NaN.
          host = _per_step(jax.device_get(buffer))
          buffer = []
          skipped += check_finite(host, step)
          metrics = _mean_metrics(host)
          timing = progress.update(step)
          logging.info("%s", progress.line(step, family.headline(metrics), timing))
          writer.scalars(step, {**metrics, **timing, "skipped_updates": skipped})
        if save:
          checkpoint(step)
        if stop:
          logging.warning(
            "Stopped by %s after step %d; its checkpoint is in %s. Run the same command to resume.",
            stop,
            step,
            manager.directory,
          )
          break
        t = time.perf_counter()
        if step % config.eval.sample_every == 0 or last:
          write_images(step)
        if step % config.eval.every_steps == 0 or last:
          eval_metrics = evaluate(step)
        progress.exclude(time.perf_counter() - t)
    finally:
      manager.wait_until_finished()
      manager.close()
      best.close()
      writer.close()
      logging.flush()
  return {**metrics, **eval_metrics}
