"""`--mode=eval` and `--mode=sample`: work on a saved checkpoint of a run.

The checkpoint is the newest in `workdir/checkpoints`, or the one of
`eval.checkpoint_step`, or with `eval.best` the one in `workdir/best`;
`eval.checkpoint_step=0` means the untrained model (the seed's
initialisation). Samples and metrics are drawn from the same keys as the
training-time evaluation, so `--mode=eval` on a run's last checkpoint repeats
the numbers its training logged.
"""

import datetime
import json
import os

from absl import logging
import jax
import ml_collections
import numpy as np

from imgen import checkpoints
from imgen import data
from imgen import images as image_lib
from imgen import steps
from imgen import writers
from imgen.errors import ConfigError
from imgen.evaluate import held_out_pass
from imgen.evaluate import make_sampler
from imgen.evaluate import sample_quality
from imgen.experiment import Experiment


def load_state(experiment: Experiment, workdir: str):
  """(state, step, folder) of the checkpoint the eval config chooses."""
  c = experiment.config.eval
  state = experiment.family.init_state(experiment.keys.init)
  if c.checkpoint_step == 0:
    return state, 0, None
  folder = "best" if c.best else "checkpoints"
  hint = (
    f"Train into it first (python main.py --config=... --workdir={workdir}), or pass "
    "--config.eval.checkpoint_step=0 to use the untrained model."
  )
  if not os.path.isdir(os.path.join(workdir, folder)):
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
    return checkpoints.restore(manager, state, step), step, folder
  finally:
    manager.close()


def _describe(step: int, folder: str | None) -> str:
  if folder is None:
    return "the untrained model (step 0)"
  return f"the checkpoint of step {step}" + (" (best/)" if folder == "best" else "")


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Held-out metrics and sample-quality metrics of one checkpoint, as JSON.

  With `eval.real_split` the candidates are that split's real images instead
  of samples: the floor a model's metrics can reach against the reference.
  Returns the record written to `workdir/eval/*.json`.
  """
  experiment = Experiment.create(config)
  quality = sample_quality(experiment, required=True)
  real_split, reference_split = config.eval.real_split, experiment.reference_split
  if real_split and quality is None:
    raise ConfigError("eval.real_split needs sample-quality metrics: set eval.metrics.")
  results, record = {}, {"mode": "eval", "workdir": workdir}
  if real_split:
    step, name = 0, f"real-{real_split}"
    record["candidates"] = f"real images of split {real_split!r}"
  else:
    state, step, folder = load_state(experiment, workdir)
    replicated = steps.replicate(state)
    name = f"step{step:07d}" + ("-best" if folder == "best" else "")
    record["candidates"] = _describe(step, folder)
    make_eval_step = experiment.family.make_eval_step()
    if make_eval_step:
      eval_step = jax.pmap(make_eval_step, axis_name=steps.AXIS, in_axes=(0, 0, None))
      batches = data.prefetch_to_device(experiment.eval_batches())
      sums = held_out_pass(eval_step, replicated, batches, experiment.keys.eval)
      scalars, _ = experiment.family.summarize_eval(sums)
      results.update({f"{config.data.eval_split}/{k}": v for k, v in scalars.items()})
  if quality:
    reference = quality.real(reference_split)
    if real_split:
      candidates = quality.real(real_split)
    else:
      candidates, _ = quality.samples(
        replicated, experiment.keys.quality_samples, config.eval.num_samples
      )
    scores = quality.scores(candidates, reference, experiment.keys.kid_subsets)
    results.update({f"{reference_split}/{k}": v for k, v in scores.items()})
    record["feature_network"] = quality.network.description
    record["feature_fingerprint"] = quality.network.fingerprint
    record["reference"] = f"{config.data.name} {reference_split} ({len(reference)} images)"
    name += f"_vs_{reference_split}"
  if not results:
    raise ConfigError(f"Nothing to evaluate for family {config.family!r}: set eval.metrics.")
  record.update(step=step, date=datetime.datetime.now().isoformat(timespec="seconds"))
  record["results"] = results
  path = os.path.join(workdir, "eval", f"{name}.json")
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      json.dump(record, f, indent=2)
    writer = writers.Writer(workdir)
    writer.scalars(step, {f"eval_{name}/{k}": v for k, v in results.items()})
    writer.close()
  logging.info(
    "%s | %s", record["candidates"], " | ".join(f"{k} {v:.4g}" for k, v in results.items())
  )
  logging.info("Wrote %s", path)
  return record


def sample_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> str:
  """`eval.num_samples` samples as PNG grids and one .npz, plus the family's
  other images (VAE reconstructions and interpolations); returns their folder."""
  experiment = Experiment.create(config)
  sample_batches = make_sampler(experiment)
  state, step, folder = load_state(experiment, workdir)
  num, per_grid = config.eval.num_samples, config.eval.grid_samples
  batches = sample_batches(steps.replicate(state), experiment.keys.quality_samples, num)
  samples = np.concatenate(
    [np.asarray(jax.device_get(b)).reshape(-1, *b.shape[2:]) for b in batches]
  )
  samples = image_lib.to_uint8(samples[:num])
  out = os.path.join(workdir, "samples", f"step{step:07d}" + ("-best" if folder == "best" else ""))
  if jax.process_index() == 0:
    os.makedirs(out, exist_ok=True)
    np.savez_compressed(os.path.join(out, "samples.npz"), images=samples, step=step)
    for i in range(0, num, per_grid):
      grid = image_lib.make_grid(samples[i : i + per_grid], 8)
      image_lib.save_png(os.path.join(out, f"samples_{i // per_grid:03d}.png"), grid)
    held_out = experiment.held_out_images(per_grid)
    extra = experiment.family.sample_images(state, experiment.keys.sample, per_grid, held_out)
    for name, batch in extra.items():
      if name in ("samples", "prior_samples"):  # The grids above hold these.
        continue
      grid = image_lib.make_grid(image_lib.to_uint8(batch), 8)
      image_lib.save_png(os.path.join(out, f"{name}.png"), grid)
  logging.info(
    "Wrote %d samples of %s to %s (samples.npz, %d grids)",
    num,
    _describe(step, folder),
    out,
    -(-num // per_grid),
  )
  return out
