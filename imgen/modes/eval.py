"""`--mode=eval`: held-out and sample-quality metrics of one checkpoint, as JSON
in workdir/eval (and TensorBoard scalars); with `eval.real_split`, the real
images of that split scored instead of samples."""

import datetime
import json
import os

from absl import logging
import jax
import ml_collections

from imgen.core import checkpoints
from imgen.core import parallel
from imgen.core import writers
from imgen.core.errors import ConfigError
from imgen.evaluation.evaluate import Evaluator
from imgen.evaluation.experiment import Experiment


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Held-out metrics and sample-quality metrics of one checkpoint, as JSON.

  With `eval.real_split` the candidates are that split's real images instead
  of samples: the floor a model's metrics can reach against the reference.
  Returns the record written to `workdir/eval/*.json`.
  """
  experiment = Experiment.create(config)
  evaluator = Evaluator(experiment, required=True)
  quality, real_split = evaluator.quality, config.eval.real_split
  if not evaluator.active:
    raise ConfigError(f"Nothing to evaluate for family {config.family!r}: set eval.metrics.")
  if real_split and quality is None:
    raise ConfigError("eval.real_split needs sample-quality metrics: set eval.metrics.")
  record = {"mode": "eval", "workdir": workdir}
  if real_split:
    step, name = 0, f"real-{real_split}"
    record["candidates"] = f"real images of split {real_split!r}"
    results = evaluator.scores(quality.real(real_split))
  else:
    state, step, folder = experiment.restore(workdir)
    name = f"step{step:07d}" + ("-best" if folder == "best" else "")
    record["candidates"] = checkpoints.describe(step, folder)
    results, _ = evaluator(parallel.replicate(state))
  if quality:
    reference_split = experiment.reference_split
    record["feature_network"] = quality.network.description
    record["feature_fingerprint"] = quality.network.fingerprint
    record["reference"] = (
      f"{config.data.name} {reference_split} ({len(evaluator.reference)} images)"
    )
    name += f"_vs_{reference_split}"
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
