"""The training loop every family shares: data, pmap'd step, logs, checkpoints.

It knows a family only through the contract of `imgen.families.base`: the
state, the per-replica train step, `headline`, `show`, and the capabilities
`Evaluates` and `Generates` (through `imgen.evaluation.evaluate`).
"""

from collections.abc import Callable, Iterator, Sequence
import time

from absl import logging
import jax
from jax import lax
import ml_collections
import numpy as np

from imgen import data
from imgen.core import checkpoints
from imgen.core import files
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
    boundary = min([end] + [(step // e + 1) * e for e in every if e])  # 0: never.
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
  files.write(
    files.join(workdir, "config.json"), config.to_json_best_effort(indent=2, sort_keys=True)
  )


def _restore(experiment: Experiment, workdir: str):
  """(checkpoint manager, state, step) of the newest checkpoint in `workdir`,
  or of the initialisation when there is none; writes config.json after it."""
  config = experiment.config
  manager = checkpoints.make_manager(workdir, keep=config.train.keep_checkpoints)
  if manager.all_steps():  # Restored (or a ConfigError): its shapes are all it needs.
    target = checkpoints.restore_target(experiment.family.init_state, experiment.keys.init)
    state, restored = checkpoints.restore_latest(manager, target)
  else:
    state, restored = experiment.family.init_state(experiment.keys.init), None
  if restored is not None:
    logging.info("Resuming from the checkpoint of step %d in %s", restored, workdir)
  if jax.process_index() == 0:  # After the restore: config.json describes the checkpoints.
    _save_config(config, workdir)
  return manager, state, int(state.step)


def _train_calls(experiment: Experiment) -> dict[int, Callable]:
  """The compiled train calls by steps per call: the guarded step, buffers donated."""
  guarded_step = guards.guard_nonfinite(experiment.family.make_train_step())
  calls = {1: parallel.pmap_step(guarded_step, donate=True)}
  per_call = experiment.config.train.steps_per_dispatch
  if per_call > 1:  # Each compiles on first use.
    calls[per_call] = parallel.pmap_step(scan_steps(guarded_step), donate=True)
  return calls


# Calls the host may dispatch ahead of the device. Unbounded, it would run a whole log
# interval ahead (the metrics are read only at log steps), and a stop signal, which is
# seen between calls, would wait for all of that work before its checkpoint: minutes for
# a slow step (seen: a 64x64 U-Net at 0.3 steps/s under SIGTERM, past a preemption's
# usual 30 s grace). Two keep the device fed while the next call is dispatched.
IN_FLIGHT = 2


class _Run:
  """What a training run holds between its steps (the replicated state, the
  unread metrics, the writers) and what it does at a step's boundaries."""

  def __init__(self, experiment: Experiment, workdir: str, manager, state, start_step: int):
    config = experiment.config
    self.experiment, self.config, self.manager = experiment, config, manager
    self.evaluator = Evaluator(experiment, required=False)
    self.held_out = experiment.held_out(config.eval.grid_samples)
    self.replicated = parallel.replicate(state)
    self.writer = writers.Writer(workdir, enabled=jax.process_index() == 0)
    self.best = checkpoints.BestCheckpoint(workdir, config.eval.best_metric, config.eval.best_mode)
    self.progress = writers.Progress(start_step, config.train.num_steps)
    self.start_step = start_step
    self.buffer, self.metrics, self.eval_metrics = [], {}, {}
    self.skipped, self.warned_best = 0, False

  def host_state(self):
    return jax.device_get(parallel.unreplicate(self.replicated))

  def train(self, call: Callable, batch, n: int, step: int) -> None:
    """Runs one call of `n` steps ending at `step`; times the first (compiles)."""
    first = step == self.start_step + n
    t = time.perf_counter()
    self.replicated, metrics = call(self.replicated, batch, self.experiment.keys.step)
    if first:
      jax.block_until_ready(metrics)
      seconds = time.perf_counter() - t
      logging.info("First call (%d step%s, compile included) took %.1fs", n, "s" * (n > 1), seconds)
      self.progress.start(step)
    self.buffer.append((n, metrics))
    if len(self.buffer) > IN_FLIGHT:
      jax.block_until_ready(self.buffer[-1 - IN_FLIGHT][1])

  def log(self, step: int) -> None:
    """Fetches the buffered metrics, checks them for non-finite values, logs them."""
    host = _per_step(jax.device_get(self.buffer))
    self.buffer = []
    self.skipped += self._check_finite(host, step)
    self.metrics = _mean_metrics(host)
    timing = self.progress.update(step)
    headline = self.experiment.family.headline(self.metrics)
    logging.info("%s", self.progress.line(step, headline, timing))
    self.writer.scalars(step, {**self.metrics, **timing, "skipped_updates": self.skipped})

  def _check_finite(self, host: list[dict], step: int) -> int:
    """Stops the run (train.on_nonfinite='stop') or counts the skipped updates."""
    bad, culprits = guards.nonfinite_report(host, step - len(host) + 1)
    if bad and self.config.train.on_nonfinite == "stop":
      raise guards.Diverged(
        f"Non-finite {culprits} at step {bad[0]}: that update was not applied and the run "
        f"stopped. The newest checkpoint (step {self.manager.latest_step()}) is from before it. "
        "Lower the learning rate, or set --config.train.on_nonfinite=skip to skip such updates."
      )
    if bad:
      logging.warning(
        "Skipped %d non-finite updates at steps %s (first: %s).", len(bad), bad[:10], culprits
      )
    return len(bad)

  def checkpoint(self, step: int) -> None:
    checkpoints.save(self.manager, step, self.host_state())

  def write_images(self, step: int) -> None:
    images, keys = {}, self.experiment.keys
    if self.evaluator.sampler is not None:
      num = self.experiment.grid_size()  # One row per class for conditional families.
      batches = self.evaluator.sampler(self.replicated, keys.sample, num)
      images["samples"] = host_samples(batches, num)
    images.update(self.experiment.family.show(self.host_state(), keys.sample, self.held_out))
    paths = self.writer.images(step, images)
    if paths:
      logging.info("Wrote %s", ", ".join(paths))

  def evaluate(self, step: int) -> None:
    """Held-out and sample-quality metrics; logs them, keeps the best checkpoint."""
    if not self.evaluator.active:
      return
    results, images = self.evaluator(self.replicated)
    self.writer.images(step, images)
    logging.info(
      "eval at step %d | %s", step, " | ".join(f"{k} {v:.4g}" for k, v in results.items())
    )
    self.writer.scalars(step, results)
    self.eval_metrics = results
    unprefixed = {k.split("/", 1)[1]: v for k, v in results.items()}
    best = self.best
    if best.update(step, unprefixed, self.host_state()):
      logging.info("Best %s so far (%.4g): step %d, kept in best/", best.metric, best.value, step)
    elif best.metric not in unprefixed and not self.warned_best:
      self.warned_best = True
      logging.warning(
        "eval.best_metric=%r is not among the eval results %s; no best checkpoint is kept.",
        best.metric,
        sorted(unprefixed),
      )

  def after(self, step: int, stop: str | None) -> bool:
    """Logs, saves, draws and evaluates where `step` falls on their schedules;
    True when the run stops here (the last step, or a stop signal)."""
    c, last = self.config, step == self.config.train.num_steps
    save = step % c.train.checkpoint_every == 0 or last or stop
    if step % c.train.log_every == 0 or save:  # Never save before checking for NaN.
      self.log(step)
    if save:
      self.checkpoint(step)
    if stop:
      logging.warning(
        "Stopped by %s after step %d; its checkpoint is in %s. Run the same command to resume.",
        stop,
        step,
        self.manager.directory,
      )
      return True
    t = time.perf_counter()
    if c.eval.sample_every and (step % c.eval.sample_every == 0 or last):
      self.write_images(step)
    if c.eval.every_steps and (step % c.eval.every_steps == 0 or last):
      self.evaluate(step)
    self.progress.exclude(time.perf_counter() - t)
    return last

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
    self.best.close()
    self.writer.close()
    logging.flush()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config.family` in `workdir`, resuming from its newest checkpoint.

  Returns the last logged metrics.
  """
  experiment = Experiment.create(config)
  manager, state, start_step = _restore(experiment, workdir)
  num_steps = config.train.num_steps
  if start_step >= num_steps:
    logging.info("Already trained to step %d (train.num_steps=%d).", start_step, num_steps)
    manager.close()
    return {}
  run = _Run(experiment, workdir, manager, state, start_step)
  every = (
    config.train.log_every,
    config.train.checkpoint_every,
    config.eval.sample_every,
    config.eval.every_steps,
  )
  sizes = lambda: dispatch_sizes(start_step, num_steps, every, config.train.steps_per_dispatch)
  batches = data.prefetch_to_device(stack_steps(experiment.train_batches(start_step), sizes()))
  train_calls = _train_calls(experiment)
  logging.info(
    "Training %s from step %d to %d; workdir %s", config.family, start_step, num_steps, workdir
  )
  with guards.StopSignals() as stops:
    try:
      step = start_step
      for calls, n in enumerate(sizes(), start=1):
        step += n
        run.train(train_calls[n], next(batches), n, step)
        if run.after(step, stops.requested(start_step + calls)):
          break
    finally:
      run.close()
  return {**run.metrics, **run.eval_metrics}
