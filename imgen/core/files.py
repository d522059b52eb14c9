"""A run's files wherever `etils.epath` reaches: a local folder, or gs://
(s3://, ...) from a pod. Orbax takes the same paths for the checkpoints; this
module is what the rest of a workdir goes through: JSON records, PNG grids,
.npz arrays, the feature cache and TensorBoard's event files.

A file is written whole: on a local disk through a temporary name renamed over
it (a reader sees the old file or the new one), on an object store by one
upload, which is whole-or-nothing already.
"""

import io
import json
import os
from typing import Any
import uuid

from etils import epath
import numpy as np
from tensorboardX import record_writer

from imgen.core.errors import ConfigError

PathLike = str | os.PathLike


def path(p: PathLike) -> epath.Path:
  return epath.Path(p)


def is_local(p: PathLike) -> bool:
  return "://" not in os.fspath(p)


def join(p: PathLike, *parts: str) -> str:
  """`p / parts...` as a string (local paths stay plain strings for the callers that log them)."""
  return os.fspath(epath.Path(p).joinpath(*parts))


def write(p: PathLike, data: bytes | str) -> None:
  """Writes `data` to `p` whole, creating its folder."""
  target = epath.Path(p)
  target.parent.mkdir(parents=True, exist_ok=True)
  mode = "wb" if isinstance(data, bytes) else "w"
  if not is_local(target):
    with target.open(mode) as f:
      f.write(data)
    return
  tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
  with tmp.open(mode) as f:
    f.write(data)
  tmp.replace(target)


def read_bytes(p: PathLike) -> bytes:
  return epath.Path(p).read_bytes()


def write_json(p: PathLike, record: Any) -> None:
  write(p, json.dumps(record, indent=2))


def run_config(workdir: PathLike, what: str, hint: str, family: str | None = None) -> dict:
  """The config.json of the trained run in `workdir` (a dict), named in errors by the
  setting `what`; `family`, if given, is the family it must be. A ConfigError otherwise."""
  p = path(workdir) / "config.json"
  if not p.is_file():
    raise ConfigError(f"{what}={workdir} holds no trained run (no config.json); {hint}")
  config = read_json(p)
  if family is not None and config.get("family") != family:
    raise ConfigError(
      f"{what}={workdir} holds a {config.get('family')!r} run, not a {family!r} one; {hint}"
    )
  return config


def read_json(p: PathLike) -> Any:
  return json.loads(epath.Path(p).read_text())


def save_npz(p: PathLike, compressed: bool = True, **arrays: np.ndarray) -> None:
  buffer = io.BytesIO()
  (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
  write(p, buffer.getvalue())


def load_npz(p: PathLike) -> dict[str, np.ndarray]:
  with np.load(io.BytesIO(read_bytes(p))) as f:
    return {name: f[name] for name in f.files}


class _EventFile:
  """A TensorBoard event file on an object store, where a file cannot be
  appended to: the events are kept and the whole file uploaded at each flush."""

  def __init__(self, p: str):
    self._path, self._buffer = epath.Path(p), io.BytesIO()

  def write(self, data: bytes) -> None:
    self._buffer.write(data)

  def flush(self) -> None:
    with self._path.open("wb") as f:
      f.write(self._buffer.getvalue())

  def close(self) -> None:
    self.flush()


class _EventFiles:
  """tensorboardX's writer factory for a URI scheme, through epath."""

  def open(self, p: str) -> _EventFile:
    return _EventFile(p)

  def directory_check(self, p: str) -> None:
    epath.Path(p).mkdir(parents=True, exist_ok=True)


def tensorboard_dir(p: PathLike) -> str:
  """`p` as a tensorboardX logdir: non-local schemes are written through epath
  (tensorboardX's own gs:// writer needs google-cloud-storage)."""
  p = os.fspath(p)
  if not is_local(p):
    record_writer.register_writer_factory(p.split("://")[0], _EventFiles())
  return p


def probe_writable(folder: PathLike) -> None:
  """Creates `folder` and writes and deletes a file in it; OSError if it cannot."""
  probe = epath.Path(folder) / f".imgen-probe-{uuid.uuid4().hex}"  # Unique across hosts.
  probe.parent.mkdir(parents=True, exist_ok=True)
  probe.write_bytes(b"")
  probe.unlink()
