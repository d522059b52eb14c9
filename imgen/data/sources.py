"""Finds a dataset by name: embedded ones are prepared on first use."""

import contextlib
import fcntl
import glob
import json
import os
import shutil

from absl import logging
import tensorflow_datasets as tfds

from imgen.core.errors import DataError
from imgen.core.errors import UserError
from imgen.core.errors import one_line
from imgen.data import embedded
from imgen.data import layouts
from imgen.data import scene_captions
from imgen.data import scenes
from imgen.data import speech
from imgen.data import spoken_mnist
from imgen.data import textures

EMBEDDED = {
  **embedded.BUILDERS,
  **scenes.BUILDERS,
  **layouts.BUILDERS,
  **scene_captions.BUILDERS,
  **speech.BUILDERS,
  **spoken_mnist.BUILDERS,
  **textures.BUILDERS,
}  # Prepared on first use, offline.


def default_data_dir() -> str:
  """TFDS's own default: $TFDS_DATA_DIR or ~/tensorflow_datasets."""
  return os.path.expanduser(tfds.core.constants.DATA_DIR)


def _prepare_hint(name: str, data_dir: str) -> str:
  return (
    f"Prepare it once on a machine with network access:\n"
    f"  tfds build {name} --data_dir={data_dir} --file_format=array_record\n"
    f"then copy {data_dir}/{name} here, or point --config.data.data_dir at it. "
    f"Datasets that need no network: {', '.join(sorted(EMBEDDED))}."
  )


def _embedded_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Prepares an embedded dataset on first use, and again if its files are damaged.

  `name` may name a variant ('digit_scenes/tiny') of the builders that have
  them; builders with a `variant_config(variant)` make configs of any variant
  they accept ('texture_crops/path/to/image.png').
  """
  base, _, variant = name.partition("/")
  builder_class = EMBEDDED[base]
  variants = [c.name for c in builder_class.BUILDER_CONFIGS]
  config = variant or None
  if variant and hasattr(builder_class, "variant_config"):
    config = builder_class.variant_config(variant)
  elif variant and variant not in variants:
    known = ", ".join(f"{base}/{v}" for v in variants) or f"only {base}"
    raise DataError(f"Dataset {name!r} has no variant {variant!r}; known: {known}.")
  config_name = getattr(config, "name", config) or (variants[0] if variants else None)
  folder = os.path.join(data_dir, base, *([config_name] if config_name else []))
  extra = {"config": config} if config else {}
  if getattr(builder_class, "READS_DATASETS", False):  # Builders made of other datasets.
    extra["get_builder"] = get_builder
  make = lambda **kw: builder_class(**kw, **extra)
  with _preparing(data_dir, base):
    return _prepared(name, folder, make, data_dir)


@contextlib.contextmanager
def _preparing(data_dir: str, base: str):
  """Holds a lock file beside the dataset while it is checked and prepared:
  processes that share `data_dir` (those of one multi-process run, or two runs
  started at once) take turns, so one prepares and the others find it ready.
  No-op for paths the OS cannot lock (gs://..., a read-only folder)."""
  try:
    if "://" in data_dir:
      raise OSError(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    lock = open(os.path.join(data_dir, f".{base}.imgen-lock"), "w")  # noqa: SIM115
  except OSError:
    yield
    return
  with lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      logging.info("Waiting for another process that is preparing %s in %s", base, data_dir)
      fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _unreadable_info(folder: str) -> str | None:
  """The first `dataset_info.json` under `folder` that does not read as JSON."""
  for path in sorted(glob.glob(os.path.join(folder, "**", "dataset_info.json"), recursive=True)):
    try:
      with open(path) as f:
        json.load(f)
    except (OSError, ValueError):
      return path
  return None


_VERIFIED = ".imgen-verified.json"


def _listing(folder: str) -> dict[str, list[int]]:
  """Every file under `folder` but the stamp: relative path -> [size, mtime in ns]."""
  listing = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      if not name.startswith(_VERIFIED):
        info = os.stat(path)
        listing[os.path.relpath(path, folder)] = [info.st_size, info.st_mtime_ns]
  return listing


def _verified_damage(builder, folder: str) -> str | None:
  """`builder.damage()`, read once per version of the files: a clean reading
  leaves a stamp of every file's size and modification time in `folder`, and
  while they match the records are not read again (seconds per run for the
  scene datasets). A truncated or rewritten file no longer matches."""
  stamp = os.path.join(folder, _VERIFIED)
  try:
    with open(stamp) as f:
      if json.load(f) == _listing(folder):
        return None
  except (OSError, ValueError):
    pass  # No stamp yet, or one that does not read: verify.
  damage = builder.damage()
  if damage is None:
    listing = _listing(folder)
    with contextlib.suppress(OSError):  # A read-only folder: verified every time.
      with open(stamp + ".tmp", "w") as f:
        json.dump(listing, f)
      os.replace(stamp + ".tmp", stamp)
  return damage


def _prepared(name: str, folder: str, make, data_dir: str) -> tfds.core.DatasetBuilder:
  """The builder of `folder`, prepared; rebuilt only where its files were
  verified as damaged (records that do not read back, metadata that is not JSON).
  Any other failure is reported and nothing is deleted."""
  try:
    builder = make(data_dir=data_dir)
  except UserError:
    raise  # What was asked for cannot be made (an exemplar that is not an image, ...).
  except Exception as e:
    unreadable = _unreadable_info(folder)
    if unreadable is None:
      raise DataError(f"Cannot open dataset {name!r} in {folder}: {one_line(e)}") from e
    builder, damage = None, f"{unreadable} is not JSON"
  else:
    damage = _verified_damage(builder, folder) if builder.is_prepared() else None
  if damage:
    logging.warning("The prepared %s in %s is damaged (%s); rebuilding it.", name, folder, damage)
    shutil.rmtree(folder)
    builder = make(data_dir=data_dir)
  if not builder.is_prepared():
    logging.info("Preparing embedded dataset %s in %s", name, data_dir)
    tfds.display_progress_bar(False)
    builder.download_and_prepare()
  return builder


def get_builder(name: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """Returns a prepared, random-access TFDS builder for `name`.

  Embedded datasets are prepared into `data_dir` if they are not there yet.
  Catalog datasets must already be prepared there in ArrayRecord format;
  otherwise a `DataError` says how to prepare them.
  """
  data_dir = data_dir or default_data_dir()
  if name.partition("/")[0] in EMBEDDED:
    return _embedded_builder(name, data_dir)

  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DataError(
      f"Unknown dataset {name!r}: it is neither embedded "
      f"({', '.join(sorted(EMBEDDED))}) nor in the TFDS catalog."
    ) from e
  if not builder.is_prepared():
    raise DataError(
      f"Dataset {name!r} is not prepared in data_dir {data_dir}.\n" + _prepare_hint(name, data_dir)
    )
  file_format = builder.info.file_format
  if file_format != tfds.core.FileFormat.ARRAY_RECORD:
    raise DataError(
      f"Dataset {name!r} in {data_dir} is stored as {file_format.value}, "
      f"which has no random access; imgen reads ArrayRecord.\n" + _prepare_hint(name, data_dir)
    )
  return builder
