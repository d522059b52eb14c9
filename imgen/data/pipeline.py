"""The input pipeline: TFDS data source -> grain -> device-sharded batches.

A batch is a dict of the dataset's fields (`imgen.data.spec`), each shaped
(local devices, rows per device, ...). Batch `s` of a run is a pure function
of (seed, s): the split is read in a new permutation each epoch, drawn from
(seed, epoch), cut into batches and sliced from `start_step`, so a resumed
run sees exactly the batches an uninterrupted one would. Of several processes,
process p reads the p-th contiguous chunk of each global batch, and the devices
are ordered process by process: global device d holds the same rows on any
split of the same devices into processes (2 processes of 2 devices compute
what 1 process of 4 computes, per-device BatchNorm and per-row noise included).
"""

import collections
from collections.abc import Iterator
import dataclasses
import functools
import os
import sys
import threading

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
import threadpoolctl

from imgen.core import parallel
from imgen.core.errors import ConfigError
from imgen.core.errors import DataError
from imgen.data.spec import IMAGE
from imgen.data.spec import LABEL
from imgen.data.spec import MASK
from imgen.data.spec import VALID
from imgen.data.spec import DataSpec

RESIZE_METHODS = ("resize", "pad")


def check_resize(method: str) -> None:
  if method not in RESIZE_METHODS:
    raise ConfigError(f"data.resize={method!r}; use one of {RESIZE_METHODS}.")


def check_seed(seed: int) -> None:
  if not 0 <= seed < 2**32:
    raise ConfigError(f"seed={seed}; use an integer in [0, 2**32).")


@functools.cache
def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) matrix of `jax.image.resize`'s antialiased linear filter.

  Resizing is separable, so an image resizes as R_h @ x @ R_w^T; the matrix
  is jax.image.resize applied to the identity along one axis.
  """
  eye = np.eye(n_in, dtype=np.float32)
  return np.asarray(jax.image.resize(eye, (n_out, n_in), method="linear", antialias=True))


def _square_crop(images: np.ndarray) -> np.ndarray:
  """The centre square of (N, H, W, ...) arrays."""
  h, w = images.shape[1:3]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  return images[:, top : top + side, left : left + side]


def _pad(images: np.ndarray, size: int) -> np.ndarray:
  """(N, H, W, ...) centred on a zero (N, size, size, ...) array."""
  n, h, w = images.shape[:3]
  if h > size or w > size:
    raise ConfigError(
      f"Cannot pad {h}x{w} images to {size}x{size}; use "
      f"config.data.resize='resize' or a larger model.image_size."
    )
  top, left = (size - h) // 2, (size - w) // 2
  out = np.zeros((n, size, size) + images.shape[3:], images.dtype)
  out[:, top : top + h, left : left + w] = images
  return out


def _to_model_size(x: np.ndarray, size: int, method: str, resample) -> np.ndarray:
  """(N, H, W, ...) -> (N, size, size, ...): padded, or centre-cropped to a
  square and then `resample(square)`."""
  check_resize(method)
  if x.shape[1:3] == (size, size):
    return x
  if method == "pad":
    return _pad(x, size)
  return resample(_square_crop(x))


def resize_images(images: np.ndarray, size: int, method: str) -> np.ndarray:
  """Float images (N, H, W, C) in [0, 255] to (N, size, size, C).

  `resize`: center-crop to a square, then antialiased bilinear resize.
  `pad`: center the image on a black square (it must not be larger).
  """

  def bilinear(square):
    r = _resize_matrix(square.shape[1], size)
    return np.einsum("ph,nhwc,qw->npqc", r, square, r, optimize=True)

  return _to_model_size(images, size, method, bilinear)


def resize_masks(masks: np.ndarray, size: int, method: str) -> np.ndarray:
  """Integer masks (N, H, W) to (N, size, size), never interpolated.

  `resize`: centre-crop to a square, then nearest neighbour: output pixel i
  takes input pixel floor((i + 1/2) * side / size), so every value is one of
  the input's. `pad`: centred on 0 (background).
  """

  def nearest(square):
    side = square.shape[1]
    index = np.minimum(((np.arange(size) + 0.5) * side / size).astype(np.int64), side - 1)
    return square[:, index][:, :, index]

  return _to_model_size(masks, size, method, nearest)


class _OneBlasThread:
  """NumPy's BLAS on one thread while any input thread prepares a batch (the
  images' resize is a matrix product). BLAS's own threads, spinning after each
  product, took the cores from XLA's: text_to_image's step ran 12% slower
  (3.17-3.21 vs 3.63 steps/s, 2026-12-06, this repo's 2-core VM). Counted, so
  that the last thread out restores the setting the first one found."""

  def __init__(self):
    self._lock, self._users, self._limit = threading.Lock(), 0, None

  def __enter__(self) -> None:
    with self._lock:
      if not self._users:
        self._limit = threadpoolctl.ThreadpoolController().limit(limits=1, user_api="blas")
      self._users += 1

  def __exit__(self, *exc_info) -> None:
    with self._lock:
      self._users -= 1
      if not self._users:
        self._limit.restore_original_limits()


_ONE_BLAS_THREAD = _OneBlasThread()


@dataclasses.dataclass(frozen=True)
class _PrepareBatch(grain.transforms.Map):
  """Stored batch -> model input (see `imgen.data.spec`), split per device."""

  spec: DataSpec
  resize: str
  num_devices: int

  def map(self, batch):
    with _ONE_BLAS_THREAD:
      return self._prepare(batch)

  def _prepare(self, batch):
    out = {}
    for name, field in self.spec.fields.items():
      x = np.asarray(batch[field.source])
      if field.kind == IMAGE:
        x = resize_images(x.astype(np.float32), self.spec.size, self.resize)
        x = x * np.float32(2.0 / 255.0) - np.float32(1.0)
      elif field.kind == MASK:
        x = resize_masks(x, self.spec.size, self.resize).astype(np.int32)
      elif field.kind == LABEL or np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.int32)
      else:
        x = x.astype(np.float32)
      out[name] = x
    if VALID in batch:
      out[VALID] = np.asarray(batch[VALID], np.float32)
    return jax.tree.map(lambda x: x.reshape((self.num_devices, -1) + x.shape[1:]), out)


IN_MEMORY_BYTES = 1 << 30  # Splits whose fields fit in this are decoded once and held.


class _InMemorySource:
  """A split decoded once into arrays: random access without per-record decoding.

  Holds the same examples in the same order as the TFDS source, so batches are
  identical; reading is ~3.5x faster through grain (measured on the embedded
  MNIST: 35k vs 10k images/s).
  """

  def __init__(self, source, keys: list[str]):
    n = len(source)
    examples = [source[i] for i in range(n)]  # ~22k records/s: 2-3 s for 50k.
    self._columns = {k: np.stack([np.asarray(e[k]) for e in examples]) for k in keys}
    self._n = n

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in self._columns.items()}

  def column(self, key: str) -> np.ndarray:
    return self._columns[key]

  def rows(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[indices] for k, v in self._columns.items()}


def data_source(builder: tfds.core.DatasetBuilder, split: str, spec: DataSpec):
  """The split's random-access source of the spec's fields, held in memory when they are small."""
  source = builder.as_data_source(split=split)
  if len(source) * sum(f.stored_bytes for f in spec.fields.values()) > IN_MEMORY_BYTES:
    return source
  return _InMemorySource(source, [f.source for f in spec.fields.values()])


def field_values(builder: tfds.core.DatasetBuilder, split: str, spec: DataSpec, source: str):
  """The distinct values of one stored feature over a whole split (for checks)."""
  split_source = data_source(builder, split, spec)
  if isinstance(split_source, _InMemorySource):
    return np.unique(split_source.column(source))
  values = set()
  for start in range(0, len(split_source), 1000):
    rows = range(start, min(len(split_source), start + 1000))
    for example in split_source.__getitems__(list(rows)):
      values.update(np.unique(example[source]).tolist())
  return np.array(sorted(values))


class _ShuffledChunks(grain.MapDataset):
  """Endless chunks of `size` indices into a split of `n` examples: the epochs'
  permutations of range(n) end to end (epoch e's drawn from (seed, e)), cut
  into consecutive chunks. Computed a chunk at a time with NumPy: shuffling and
  batching record by record through grain cost ~1.1 ms of host time per batch
  of 64 (~5% of a 2-core machine during the VAE's 17 ms step), this ~0.02 ms."""

  def __init__(self, n: int, size: int, seed: int):
    super().__init__()
    self._n, self._size, self._seed = n, size, seed
    self._lock, self._epochs = threading.Lock(), {}

  def __len__(self) -> int:
    return sys.maxsize

  def __str__(self) -> str:
    return f"ShuffledChunks(n={self._n}, size={self._size})"

  def _permutation(self, epoch: int) -> np.ndarray:
    with self._lock:  # grain's reader threads share the dataset.
      if epoch not in self._epochs:
        if len(self._epochs) >= 4:  # Readers are at most an epoch or two apart.
          self._epochs.pop(min(self._epochs))
        self._epochs[epoch] = np.random.default_rng([self._seed, epoch]).permutation(self._n)
      return self._epochs[epoch]

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    epochs, within = np.divmod(index * self._size + np.arange(self._size), self._n)
    out = np.empty(self._size, np.int64)
    for epoch in np.unique(epochs):
      at = epochs == epoch
      out[at] = self._permutation(int(epoch))[within[at]]
    return out


def _read_rows(source, indices: np.ndarray) -> dict[str, np.ndarray]:
  """Rows `indices` of a source, stacked per field."""
  if isinstance(source, _InMemorySource):
    return source.rows(indices)
  examples = source.__getitems__(indices.tolist())
  return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}


def per_process_batch_size(global_batch_size: int, name: str = "train.batch_size") -> int:
  """Checks that the global batch splits evenly; returns one process's share."""
  devices = jax.device_count()
  if global_batch_size % devices:
    raise ConfigError(
      f"{name} {global_batch_size} is not divisible by {devices} "
      f"devices; use a multiple of {devices}."
    )
  return global_batch_size // jax.process_count()


MAX_THREADS = 16  # Beyond this the 28-64 px batches gain nothing.


def input_threads(configured: int | None) -> int:
  """data.num_threads, or where it is None one per host core up to `MAX_THREADS`:
  a 2-core laptop keeps 2, an accelerator host's many cores feed a fast step."""
  if configured is None:
    return max(1, min(os.cpu_count() or 1, MAX_THREADS))
  if configured < 1:
    raise ConfigError(f"data.num_threads={configured}; use 1 or more, or leave it unset.")
  return configured


def _process_chunks(chunks: grain.MapDataset) -> grain.MapDataset:
  """This process's chunk of each global batch: chunks (rows / processes each)
  p, p + P, p + 2P, ... of P processes. Lazy: the others are never read."""
  return chunks[jax.process_index() :: jax.process_count()]


def make_train_iterator(
  builder: tfds.core.DatasetBuilder,
  *,
  split: str,
  spec: DataSpec,
  resize: str,
  global_batch_size: int,
  seed: int,
  start_step: int = 0,
  num_threads: int | None = None,
  prefetch: int = 4,
) -> Iterator[dict[str, np.ndarray]]:
  """Endless per-process batches of the spec's fields, each (devices, b, ...).

  Batch `k` yielded is global step `start_step + k`, for any process count.
  """
  batch = per_process_batch_size(global_batch_size)
  source = data_source(builder, split, spec)
  if len(source) < global_batch_size:
    raise DataError(
      f"Split {split!r} of {builder.name!r} has {len(source)} examples, fewer "
      f"than one batch of {global_batch_size}."
    )
  check_seed(seed)
  chunks = _process_chunks(_ShuffledChunks(len(source), batch, seed))[start_step:]
  ds = chunks.map(functools.partial(_read_rows, source))
  ds = ds.map(_PrepareBatch(spec, resize, jax.local_device_count()))
  options = grain.ReadOptions(num_threads=input_threads(num_threads), prefetch_buffer_size=prefetch)
  return iter(ds.to_iter_dataset(options))


def make_eval_iterator(
  builder: tfds.core.DatasetBuilder,
  *,
  split: str,
  spec: DataSpec,
  resize: str,
  global_batch_size: int,
) -> Iterator[dict[str, np.ndarray]]:
  """One ordered pass over `split`, in batches shaped like the train batches.

  The last batch is padded with copies of example 0 whose `VALID` is 0, so
  every process runs the same number of batches and sums count each example
  once.
  """
  batch = per_process_batch_size(global_batch_size, "eval.batch_size")
  source = data_source(builder, split, spec)
  n = len(source)
  total = -(-n // global_batch_size) * global_batch_size

  def load(i: int) -> dict:
    example = source[i if i < n else 0]
    return {**{f.source: example[f.source] for f in spec.fields.values()}, VALID: np.float32(i < n)}

  ds = _process_chunks(grain.MapDataset.range(total).map(load).batch(batch, drop_remainder=True))
  ds = ds.map(_PrepareBatch(spec, resize, jax.local_device_count()))
  return iter(ds)


def prefetch_to_device(
  iterator: Iterator[dict[str, np.ndarray]], size: int = 2
) -> Iterator[dict[str, jax.Array]]:
  """Keeps `size` batches in flight to the local devices (leading axis)."""
  sharding = parallel.device_sharding()
  queue = collections.deque()
  for batch in iterator:
    queue.append(jax.device_put(batch, sharding))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
