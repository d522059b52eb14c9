"""The training loop every family shares: data, pmap'd step, logs, checkpoints."""

import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from imgen import checkpoints
from imgen import data
from imgen import families
from imgen import steps
from imgen import writers
from imgen.errors import ConfigError


def _mean_metrics(buffer: list[dict]) -> dict[str, float]:
  """Averages per-step device metrics (replica 0; they are pmean'd)."""
  host = jax.device_get(buffer)
  return {k: float(np.mean([m[k][0] for m in host])) for k in host[0]}


def _save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def _validate(config: ml_collections.ConfigDict, builder) -> None:
  """Catches config values that would fail late or deep inside JAX."""
  positive = {
    "train.num_steps": config.train.num_steps,
    "train.batch_size": config.train.batch_size,
    "train.log_every": config.train.log_every,
    "train.checkpoint_every": config.train.checkpoint_every,
    "train.keep_checkpoints": config.train.keep_checkpoints,
    "eval.sample_every": config.eval.sample_every,
    "eval.num_samples": config.eval.num_samples,
    "eval.batch_size": config.eval.batch_size,
    "eval.every_steps": config.eval.every_steps,
  }
  for name, value in positive.items():
    if value < 1:
      raise ConfigError(f"{name}={value}; it must be a positive integer.")
  data.pipeline.check_resize(config.data.resize)
  splits = sorted(builder.info.splits.keys())
  for field in ("train_split", "eval_split"):
    if config.data[field] not in splits:
      raise ConfigError(f"data.{field}={config.data[field]!r}; {builder.name} has splits {splits}.")
  data.pipeline.check_seed(config.seed)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config.family` in `workdir`, resuming from its newest checkpoint.

  Returns the last logged metrics.
  """
  builder = data.get_builder(config.data.name, config.data.data_dir)
  _validate(config, builder)
  spec = data.image_spec(builder, config.data.image_key, config.model.image_size)
  for name in ("train.batch_size", "eval.batch_size"):  # Fail before compiling.
    data.pipeline.per_process_batch_size(config[name.split(".")[0]].batch_size, name)
  family = families.create(config, spec)

  key = jax.random.key(config.seed)
  init_key, step_key, sample_key, eval_key = jax.random.split(key, 4)
  state = family.init_state(init_key)
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

  images = dict(image_key=config.data.image_key, size=spec.size, resize=config.data.resize)

  def eval_batches():
    return data.make_eval_iterator(
      builder, split=config.data.eval_split, global_batch_size=config.eval.batch_size, **images
    )

  held_out = []  # The first held-out images, for reconstructions and interpolations.
  for batch in eval_batches():
    held_out.append(batch["image"].reshape((-1,) + spec.shape))
    if sum(map(len, held_out)) >= config.eval.num_samples:
      break
  held_out = np.concatenate(held_out)[: config.eval.num_samples]
  batches = data.prefetch_to_device(
    data.make_train_iterator(
      builder,
      split=config.data.train_split,
      global_batch_size=config.train.batch_size,
      **images,
      seed=config.seed,
      start_step=start_step,
    )
  )
  train_step = jax.pmap(
    family.make_train_step(), axis_name=steps.AXIS, in_axes=(0, 0, None), donate_argnums=(0,)
  )
  make_eval_step = family.make_eval_step()
  eval_step = make_eval_step and jax.pmap(
    make_eval_step, axis_name=steps.AXIS, in_axes=(0, 0, None)
  )
  replicated = steps.replicate(state)
  writer = writers.Writer(workdir, enabled=jax.process_index() == 0)
  progress = writers.Progress(start_step, num_steps)
  buffer, metrics, eval_metrics = [], {}, {}

  def write_samples(step: int) -> None:
    host_state = steps.unreplicate(replicated)
    paths = writer.images(
      step, family.sample_images(host_state, sample_key, config.eval.num_samples, held_out)
    )
    if paths:
      logging.info("Wrote %s", ", ".join(paths))

  def evaluate(step: int) -> dict[str, float]:
    """Sums the eval step over one pass of the eval split; logs the summary."""
    sums = None
    for i, batch in enumerate(data.prefetch_to_device(eval_batches())):
      out = eval_step(replicated, batch, jax.random.fold_in(eval_key, i))
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    scalars, images = family.summarize_eval(jax.device_get(steps.unreplicate(sums)))
    logging.info(
      "eval %s at step %d | %s",
      config.data.eval_split,
      step,
      " | ".join(f"{k} {v:.4g}" for k, v in scalars.items()),
    )
    writer.scalars(step, {f"{config.data.eval_split}/{k}": v for k, v in scalars.items()})
    writer.images(step, images)
    return {f"{config.data.eval_split}/{k}": v for k, v in scalars.items()}

  def checkpoint(step: int) -> None:
    checkpoints.save(manager, step, jax.device_get(steps.unreplicate(replicated)))

  logging.info(
    "Training %s from step %d to %d; workdir %s", config.family, start_step, num_steps, workdir
  )
  try:
    for step in range(start_step + 1, num_steps + 1):
      batch = next(batches)
      if step == start_step + 1:
        t = time.perf_counter()
        replicated, step_metrics = train_step(replicated, batch, step_key)
        jax.block_until_ready(step_metrics)
        logging.info("First step (compile included) took %.1fs", time.perf_counter() - t)
        progress.start(step)
      else:
        replicated, step_metrics = train_step(replicated, batch, step_key)
      buffer.append(step_metrics)

      last = step == num_steps
      if step % config.train.log_every == 0 or last:
        metrics = _mean_metrics(buffer)
        buffer = []
        timing = progress.update(step)
        logging.info("%s", progress.line(step, family.headline(metrics), timing))
        writer.scalars(step, {**metrics, **timing})
        if not all(np.isfinite(v) for v in metrics.values()):
          logging.warning("Non-finite metrics at step %d: %s", step, metrics)
      if step % config.train.checkpoint_every == 0 or last:
        checkpoint(step)
      t = time.perf_counter()
      if step % config.eval.sample_every == 0 or last:
        write_samples(step)
      if eval_step and (step % config.eval.every_steps == 0 or last):
        eval_metrics = evaluate(step)
      progress.exclude(time.perf_counter() - t)
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.close()
  return {**metrics, **eval_metrics}
