"""What `main.py --mode=...` runs: a registry of modes, each `run(config, workdir)`.

- `train`: train (or resume) in the workdir (`imgen.modes.train`).
- `eval`: held-out and sample-quality metrics of a saved checkpoint, as JSON.
- `sample`: `eval.num_samples` samples of a checkpoint as PNG grids and .npz,
  and the family's other images. Conditional families draw the classes of
  `eval.classes` (default all), one class per grid row; the .npz holds their
  `labels`.
- `inpaint`: held-out images completed under masks and scored against the
  truth beside a classic baseline (`imgen.modes.inpaint`), for families that inpaint.
- `segment`: masks of the held-out split (scored), a folder of images or an
  .npz (`imgen.modes.segment`), for families that segment.
- `texture`: a texture of the exemplar by optimisation and by the trained
  spatial GAN, scored and timed (`imgen.modes.texture`).
- `compose`: scenes assembled from trained texture and digit generators,
  blended three ways, segmented and scored (`imgen.modes.compose`).

The checkpoint is the newest in `workdir/checkpoints`, or the one of
`eval.checkpoint_step`, or with `eval.best` the one in `workdir/best`;
`eval.checkpoint_step=0` means the untrained model (the seed's
initialisation). Samples and metrics are drawn from the same keys as the
training-time evaluation, so `--mode=eval` on a run's last checkpoint repeats
the numbers its training logged. A new mode is a file in this folder and its
line in `MODES` (the shape is in `imgen/modes/base.py`). A config says which
modes it is for (`config.modes`); any other mode is a one-line error that
names the right command.
"""

from typing import Any

import jax
import ml_collections

from imgen.core import files
from imgen.core import launch
from imgen.core.errors import ConfigError
from imgen.core.errors import one_line
from imgen.modes import compose
from imgen.modes import eval as eval_mode
from imgen.modes import inpaint
from imgen.modes import prompts
from imgen.modes import sample
from imgen.modes import segment
from imgen.modes import texture
from imgen.modes import train
from imgen.modes.base import Mode

MODES = {
  "train": Mode("train (or resume) in --workdir", False, on_config=train.train_and_evaluate),
  "eval": Mode("metrics of a checkpoint as JSON in workdir/eval", True, eval_mode.run),
  "sample": Mode("eval.num_samples samples as PNG grids and .npz", True, sample.run),
  "inpaint": Mode(
    "complete held-out images under masks, scored, in workdir/inpaint", True, inpaint.run
  ),
  "segment": Mode(
    "masks of the held-out split, a folder or an .npz, in workdir/segment", True, segment.run
  ),
  "texture": Mode(
    "a texture by optimisation and by the trained spatial GAN, scored, in workdir/texture",
    True,
    texture.run,
  ),
  "prompts": Mode(
    "samples of held-out text or speech prompts, scored by a segmenter or classifier",
    True,
    prompts.run,
  ),
  "compose": Mode(
    "scenes from trained generators, blended and segmented, in workdir/compose",
    False,
    on_config=compose.compose_scenes,
  ),
}


def check_workdir(workdir: str) -> None:
  """Creates `workdir` and checks that files can be written there, before
  anything compiles: a local folder, or gs:// (s3://, ...) through etils.epath."""
  try:
    files.probe_writable(workdir)
  except OSError as e:
    raise ConfigError(
      f"--workdir={workdir} cannot be used: {e.strerror or e}. Pass a folder you can write to."
    ) from e
  except ImportError as e:  # fsspec's filesystem for the scheme is not installed.
    raise ConfigError(f"--workdir={workdir} cannot be used: {one_line(e)}.") from e
  except (KeyError, NotImplementedError) as e:
    raise ConfigError(
      f"--workdir={workdir}: etils.epath knows no such scheme ({one_line(e)}); "
      "use a local folder or gs://, s3://."
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


def check_mode(mode: str, config: ml_collections.ConfigDict, config_file: str) -> None:
  """A ConfigError naming the right command when `config` is not meant for
  `mode` (its `modes` field lists the modes it is for)."""
  if mode not in MODES:
    raise ConfigError(f"--mode={mode} is unknown; known: {sorted(MODES)}.")
  declared = [m.strip() for m in config.get("modes", ",".join(MODES)).split(",") if m.strip()]
  if mode in declared:
    return
  other = next((m for m in declared if m != "train"), declared[0] if declared else "train")
  command = f"python main.py --config={config_file} --mode={other}"
  if MODES[other].needs_run:
    command += " --workdir=<its trained run>"
  raise ConfigError(
    f"{config_file} is for --mode={','.join(declared)}, not --mode={mode}; for example: {command}"
  )


def run(
  mode: str, config: ml_collections.ConfigDict, workdir: str, config_file: str = "<config file>"
) -> Any:
  """Runs `mode` (a key of `MODES`) on `config` (read from `config_file`) in
  `workdir`: what `main.py` does."""
  check_mode(mode, config, config_file)
  check_workdir(workdir)
  return MODES[mode](config, workdir)
