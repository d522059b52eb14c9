"""`--mode=eval`: held-out and sample-quality metrics of one checkpoint, as JSON
in workdir/eval (and TensorBoard scalars); with `eval.real_split`, the real
images of that split scored instead of samples."""

import datetime

from absl import logging
import jax

from imgen.core import files
from imgen.core import parallel
from imgen.core import writers
from imgen.core.errors import ConfigError
from imgen.evaluation.evaluate import Evaluator
from imgen.evaluation.experiment import Experiment
from imgen.modes.base import Restore


def run(experiment: Experiment, restore: Restore) -> tuple[dict, str]:
  """Held-out metrics and sample-quality metrics of one checkpoint, as JSON in
  workdir/eval. With `eval.real_split` the candidates are that split's real
  images instead of samples (no checkpoint is read): the floor a model's
  metrics can reach against the reference."""
  config = experiment.config
  evaluator = Evaluator(experiment, required=True)
  quality, real_split = evaluator.quality, config.eval.real_split
  if not evaluator.active:
    raise ConfigError(f"Nothing to evaluate for family {config.family!r}: set eval.metrics.")
  if real_split and quality is None:
    raise ConfigError("eval.real_split needs sample-quality metrics: set eval.metrics.")
  workdir = restore.workdir
  record = {"mode": "eval", "workdir": workdir}
  if real_split:
    step, name = 0, f"real-{real_split}"
    record["candidates"] = f"real images of split {real_split!r}"
    results = evaluator.scores(quality.real(real_split))
  else:
    trained = restore()
    step, name = trained.step, trained.name
    record["candidates"] = trained.description
    results, _ = evaluator(parallel.replicate(trained.state))
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
  path = files.join(workdir, "eval", f"{name}.json")
  if jax.process_index() == 0:
    writer = writers.Writer(workdir)
    writer.scalars(step, {f"eval_{name}/{k}": v for k, v in results.items()})
    writer.close()
  logging.info(
    "%s | %s", record["candidates"], " | ".join(f"{k} {v:.4g}" for k, v in results.items())
  )
  return record, path
