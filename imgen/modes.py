"""What `main.py --mode=...` runs: a registry of modes, each `run(config, workdir)`.

- `train`: train (or resume) in the workdir (`imgen.train`).
- `eval`: held-out and sample-quality metrics of a saved checkpoint, as JSON.
- `sample`: `eval.num_samples` samples of a checkpoint as PNG grids and .npz,
  and the family's other images. Conditional families draw the classes of
  `eval.classes` (default all), one class per grid row; the .npz holds their
  `labels`.
- `inpaint`: held-out images completed under masks and scored against the
  truth beside a classic baseline (`imgen.inpaint`), for families that inpaint.
- `segment`: masks of the held-out split (scored), a folder of images or an
  .npz (`imgen.segmentation`), for families that segment.
- `texture`: a texture of the exemplar by optimisation and by the trained
  spatial GAN, scored and timed (`imgen.synthesis`).
- `compose`: scenes assembled from trained texture and digit generators,
  blended three ways, segmented and scored (`imgen.compose`).

The checkpoint is the newest in `workdir/checkpoints`, or the one of
`eval.checkpoint_step`, or with `eval.best` the one in `workdir/best`;
`eval.checkpoint_step=0` means the untrained model (the seed's
initialisation). Samples and metrics are drawn from the same keys as the
training-time evaluation, so `--mode=eval` on a run's last checkpoint repeats
the numbers its training logged. A new mode is a function here and its entry
in `MODES`.
"""

from collections.abc import Callable
import dataclasses
import datetime
import json
import os
import tempfile
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from imgen import checkpoints
from imgen import compose
from imgen import images as image_lib
from imgen import inpaint
from imgen import launch
from imgen import parallel
from imgen import prompts
from imgen import segmentation
from imgen import synthesis
from imgen import train
from imgen import writers
from imgen.errors import ConfigError
from imgen.evaluate import Evaluator
from imgen.evaluate import host_samples
from imgen.evaluate import make_sampler
from imgen.experiment import GRID_COLUMNS
from imgen.experiment import Experiment


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
    state, step, folder = checkpoints.load_chosen(experiment, workdir)
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


def sample_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> str:
  """`eval.num_samples` samples as PNG grids and one .npz, plus the family's
  other images (VAE reconstructions and interpolations); returns their folder."""
  experiment = Experiment.create(config)
  sample_batches = make_sampler(
    experiment.family, config.family, config.eval.batch_size, experiment.condition_rows
  )
  state, step, folder = checkpoints.load_chosen(experiment, workdir)
  num, per_grid = config.eval.num_samples, experiment.grid_size()
  batches = sample_batches(parallel.replicate(state), experiment.keys.quality_samples, num)
  samples = image_lib.to_uint8(host_samples(batches, num))
  out = os.path.join(workdir, "samples", f"step{step:07d}" + ("-best" if folder == "best" else ""))
  held_out = experiment.held_out(per_grid)  # On every process: it gathers.
  if jax.process_index() == 0:
    os.makedirs(out, exist_ok=True)
    labels = experiment.class_rows(num)
    extra = {} if labels is None else {"labels": labels}
    conditions = experiment.condition_rows(num)  # Token ids or clips of text/speech models.
    if labels is None and conditions is not None:
      extra["conditions"] = conditions
    np.savez_compressed(os.path.join(out, "samples.npz"), images=samples, step=step, **extra)
    for i in range(0, num, per_grid):
      grid = image_lib.make_grid(samples[i : i + per_grid], GRID_COLUMNS)
      image_lib.save_png(os.path.join(out, f"samples_{i // per_grid:03d}.png"), grid)
    shown = experiment.family.show(state, experiment.keys.sample, held_out)
    for name, batch in shown.items():
      grid = image_lib.make_grid(image_lib.to_uint8(batch), 8)
      image_lib.save_png(os.path.join(out, f"{name}.png"), grid)
  logging.info(
    "Wrote %d samples of %s to %s (samples.npz, %d grids)",
    num,
    checkpoints.describe(step, folder),
    out,
    -(-num // per_grid),
  )
  return out


@dataclasses.dataclass(frozen=True)
class Mode:
  run: Callable[[ml_collections.ConfigDict, str], Any]
  help: str
  needs_run: bool  # Works on the --workdir of an earlier run: no default workdir.


MODES = {
  "train": Mode(train.train_and_evaluate, "train (or resume) in --workdir", needs_run=False),
  "eval": Mode(evaluate_checkpoint, "metrics of a checkpoint as JSON in workdir/eval", True),
  "sample": Mode(sample_checkpoint, "eval.num_samples samples as PNG grids and .npz", True),
  "inpaint": Mode(
    inpaint.inpaint_checkpoint,
    "complete held-out images under masks, scored, in workdir/inpaint",
    True,
  ),
  "segment": Mode(
    segmentation.segment_checkpoint,
    "masks of the held-out split, a folder or an .npz, in workdir/segment",
    True,
  ),
  "texture": Mode(
    synthesis.texture_checkpoint,
    "a texture by optimisation and by the trained spatial GAN, scored, in workdir/texture",
    True,
  ),
  "prompts": Mode(
    prompts.prompts_checkpoint,
    "samples of held-out text or speech prompts, scored by a segmenter or classifier",
    True,
  ),
  "compose": Mode(
    compose.compose_scenes,
    "scenes from trained generators, blended and segmented, in workdir/compose",
    False,
  ),
}


def check_workdir(workdir: str) -> None:
  """Creates `workdir` and checks that files can be written there, before anything compiles."""
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise ConfigError(
      f"--workdir={workdir} cannot be used: {e.strerror or e}. Pass a folder you can write to."
    ) from e


def choose_workdir(mode: str, workdir: str | None, config_file: str) -> str:
  """`--workdir`, or for a mode that starts a run on one process a new folder
  under runs/ (`launch.default_workdir`); a ConfigError where one is needed."""
  if mode in MODES and MODES[mode].needs_run and not workdir:
    raise ConfigError(f"--mode={mode} needs the --workdir of a run.")
  if jax.process_count() > 1 and not workdir:
    raise ConfigError(
      "A run of several processes needs --workdir: one folder that every process reaches."
    )
  return workdir or launch.default_workdir(config_file)


def run(mode: str, config: ml_collections.ConfigDict, workdir: str) -> Any:
  """Runs `mode` (a key of `MODES`) on `config` in `workdir`: what `main.py` does."""
  if mode not in MODES:
    raise ConfigError(f"--mode={mode} is unknown; known: {sorted(MODES)}.")
  check_workdir(workdir)
  return MODES[mode].run(config, workdir)
