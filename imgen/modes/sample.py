"""`--mode=sample`: `eval.num_samples` samples of a checkpoint as PNG grids and
one .npz, plus the family's other images. Conditional families draw the classes
of `eval.classes` (default all), one class per grid row; the .npz holds their
`labels`."""

from absl import logging
import jax

from imgen.core import files
from imgen.core import images as image_lib
from imgen.core import parallel
from imgen.evaluation.evaluate import host_samples
from imgen.evaluation.evaluate import make_sampler
from imgen.evaluation.experiment import GRID_COLUMNS
from imgen.evaluation.experiment import Experiment
from imgen.modes.base import Restore


def run(experiment: Experiment, restore: Restore) -> tuple[dict, str]:
  """`eval.num_samples` samples as PNG grids and one .npz, plus the family's
  other images (VAE reconstructions and interpolations), in `folder` (the record's)."""
  config = experiment.config
  sample_batches = make_sampler(
    experiment.family, config.family, config.eval.batch_size, experiment.condition_rows
  )
  trained = restore()
  state, step = trained.state, trained.step
  num, per_grid = config.eval.num_samples, experiment.grid_size()
  batches = sample_batches(parallel.replicate(state), experiment.keys.quality_samples, num)
  samples = image_lib.to_uint8(host_samples(batches, num))
  out = files.join(trained.workdir, "samples", trained.name)
  held_out = experiment.held_out(per_grid)  # On every process: it gathers.
  if jax.process_index() == 0:
    labels = experiment.class_rows(num)
    extra = {} if labels is None else {"labels": labels}
    conditions = experiment.condition_rows(num)  # Token ids or clips of text/speech models.
    if labels is None and conditions is not None:
      extra["conditions"] = conditions
    files.save_npz(files.join(out, "samples.npz"), images=samples, step=step, **extra)
    folder = files.path(out)
    for stale in folder.glob("samples_[0-9][0-9][0-9].png"):  # An earlier call's, of more samples.
      stale.unlink()
    for i in range(0, num, per_grid):
      grid = image_lib.make_grid(samples[i : i + per_grid], GRID_COLUMNS)
      image_lib.save_png(files.join(out, f"samples_{i // per_grid:03d}.png"), grid)
    shown = experiment.family.show(state, experiment.keys.sample, held_out)
    for name, batch in shown.items():
      grid = image_lib.make_grid(image_lib.to_uint8(batch), 8)
      image_lib.save_png(files.join(out, f"{name}.png"), grid)
  logging.info(
    "Wrote %d samples of %s to %s (samples.npz, %d grids)",
    num,
    trained.description,
    out,
    -(-num // per_grid),
  )
  record = {"mode": "sample", "folder": out, "step": step, "candidates": trained.description}
  record["num_samples"] = num
  return record, files.join(out, "record.json")
