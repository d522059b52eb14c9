"""TensorBoard scalars and images, PNG grids, and the terminal progress line."""

import logging as std_logging
import os
import time

from absl import logging
import numpy as np
from tensorboardX import SummaryWriter

from imgen.core import files
from imgen.core import images as image_lib


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Writer:
  """Writes to TensorBoard (`workdir/tensorboard`) and `workdir/samples/*.png`.

  Only one process of a multi-host run writes (`enabled`); the others no-op.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.workdir = workdir
    self._tb = (
      SummaryWriter(files.tensorboard_dir(files.join(workdir, "tensorboard"))) if enabled else None
    )

  def scalars(self, step: int, scalars: dict[str, float]) -> None:
    if self._tb is None:
      return
    for name, value in scalars.items():
      self._tb.add_scalar(name, value, step)

  def images(self, step: int, images: dict[str, np.ndarray]) -> list[str]:
    """Logs each [-1, 1] batch as a grid; returns the PNG paths written."""
    if self._tb is None:
      return []
    paths = []
    for name, batch in images.items():
      columns = 8 if len(batch) % 8 == 0 else None
      grid = image_lib.make_grid(image_lib.to_uint8(batch), columns)
      self._tb.add_image(name, grid, step, dataformats="HWC")
      path = files.join(self.workdir, "samples", f"{name}_{step:07d}.png")
      image_lib.save_png(path, grid)
      paths.append(path)
    return paths

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_scalars(workdir: str) -> dict[str, dict[int, float]]:
  """{tag: {step: value}} of the scalars in `workdir/tensorboard` (local or
  gs://), read from its event files: TFRecord framing (length, its CRC, the
  Event, its CRC) around tensorboardX's Event protos."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top

  out = {}
  for path in sorted(files.path(workdir).joinpath("tensorboard").iterdir()):
    data, at = path.read_bytes(), 0
    while at + 12 <= len(data):
      length = int.from_bytes(data[at : at + 8], "little")
      event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
      at += 12 + length + 4
      for value in event.summary.value:
        if value.HasField("simple_value"):
          out.setdefault(value.tag, {})[event.step] = value.simple_value
  return out


class Progress:
  """Train steps/s and ETA over each logging interval (compile time excluded)."""

  def __init__(self, start_step: int, num_steps: int):
    self.num_steps = num_steps
    self._step, self._time = start_step, None

  def start(self, step: int) -> None:
    """Call once the first (compiling) step has finished."""
    self._step, self._time = step, time.perf_counter()

  def exclude(self, seconds: float) -> None:
    """Leaves `seconds` (evaluation, sampling) out of the steps/s figure."""
    if self._time is not None:
      self._time += seconds

  def update(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    if self._time is None or step == self._step:
      return {}
    rate = (step - self._step) / (now - self._time)
    self._step, self._time = step, now
    return {"steps_per_sec": rate, "eta_sec": (self.num_steps - step) / rate}

  def line(self, step: int, metrics: dict[str, float], timing: dict[str, float]) -> str:
    parts = [f"step {step}/{self.num_steps}"]
    parts += [f"{k} {v:.4g}" for k, v in metrics.items()]
    if timing:
      parts.append(f"{timing['steps_per_sec']:.2f} steps/s")
      parts.append(f"ETA {_duration(timing['eta_sec'])}")
    return " | ".join(parts)


class _ProjectInfoOnly(std_logging.Filter):
  """Lets through warnings from anywhere, INFO only from imgen and main.py."""

  def __init__(self, roots: tuple[str, ...]):
    super().__init__()
    self._roots = roots

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or record.pathname.startswith(self._roots)


def quiet_library_logs(*extra_roots: str) -> None:
  """Hides the INFO chatter of Orbax, TFDS and JAX (hundreds of lines a save)."""
  package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # imgen/
  logging.get_absl_handler().addFilter(_ProjectInfoOnly((package, *extra_roots)))
