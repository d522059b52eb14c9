"""Sample-quality metrics from feature-network outputs, in JAX.

- Fréchet distance (FID, Heusel et al. 2017, arXiv:1706.08500) between
  Gaussians fitted to real and generated features.
- Kernel distance (KID, Bińkowski et al. 2018, arXiv:1801.01401): unbiased
  MMD^2 with the kernel (x.y / d + 1)^3, averaged over random subsets, with
  its standard deviation over the subsets.
- Inception Score (Salimans et al. 2016, arXiv:1606.03498): exp E_x KL(p(y|x)
  || p(y)) from classifier logits, mean and std over splits.
- Precision and recall (Kynkäänniemi et al. 2019, arXiv:1904.06991): the share
  of generated samples inside the real manifold and of real samples inside the
  generated one, each manifold a union of balls reaching every point's k-th
  nearest neighbour.

The arithmetic runs in float64 (`jax.enable_x64`): covariances of 2,048-d
features lose FID digits in float32, and KID is a small difference of large
kernel sums. It runs on this process's devices where the backend has float64
(CPU, GPU) and on the host's CPU devices on TPU, which has none
(`float64_devices`). KID's subsets and precision/recall's blocks of rows, the
costly parts, are split over those devices.
"""

from collections.abc import Callable, Iterator
import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np

METRICS = ("fid", "kid", "is", "pr")


def float64_devices() -> list[jax.Device]:
  """Where the metrics' float64 arithmetic runs: this process's devices, or
  on TPU (no float64) the host's CPU devices."""
  if jax.default_backend() == "tpu":
    return jax.local_devices(backend="cpu")
  return jax.local_devices()


@contextlib.contextmanager
def _float64() -> Iterator[None]:
  """float64 on, and new arrays and jitted calls on the first of `float64_devices()`."""
  with jax.enable_x64(True), jax.default_device(float64_devices()[0]):
    yield


def _f64(x) -> jax.Array:
  return jnp.asarray(np.asarray(x, np.float64))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and (unbiased, n - 1) covariance of (n, d) features."""
  with _float64():
    mean, cov = _statistics(_f64(features))
    return np.asarray(mean), np.asarray(cov)


@jax.jit
def _statistics(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  mean = jnp.mean(x, axis=0)
  centred = x - mean
  return mean, centred.T @ centred / (x.shape[0] - 1)


@jax.jit
def _frechet(mu1, sigma1, mu2, sigma2) -> jax.Array:
  # tr sqrt(S1 S2) = tr sqrt(A S2 A) with A = sqrt(S1): A S2 A is symmetric
  # positive semi-definite, so its square root comes from `eigvalsh`.
  w, v = jnp.linalg.eigh(sigma1)
  root = (v * jnp.sqrt(jnp.maximum(w, 0.0))) @ v.T
  middle = root @ sigma2 @ root
  trace_sqrt = jnp.sum(jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh((middle + middle.T) / 2), 0.0)))
  diff = mu1 - mu2
  return diff @ diff + jnp.trace(sigma1) + jnp.trace(sigma2) - 2.0 * trace_sqrt


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), between two Gaussians."""
  with _float64():
    return float(_frechet(_f64(mu1), _f64(sigma1), _f64(mu2), _f64(sigma2)))


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
  """FID between two (n, d) feature sets."""
  return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def _sharded_map(fn: Callable, xs: jax.Array, *shared: jax.Array, **static) -> jax.Array:
  """[fn(x, *shared, **static) for x in xs], stacked, with xs split over
  `float64_devices()` (each maps over its share); padding items are computed and dropped."""
  devices = tuple(float64_devices())
  n = len(devices)
  xs_padded = jnp.pad(xs, [(0, -len(xs) % n)] + [(0, 0)] * (xs.ndim - 1))
  out = _pmapped_map(fn, len(shared), tuple(sorted(static.items())), devices)(
    xs_padded.reshape(n, -1, *xs.shape[1:]), *shared
  )
  return out.reshape(-1, *out.shape[2:])[: len(xs)]


@functools.cache
def _pmapped_map(fn: Callable, num_shared: int, static: tuple, devices: tuple) -> Callable:
  mapped = lambda xs, *shared: jax.lax.map(lambda x: fn(x, *shared, **dict(static)), xs)
  return jax.pmap(mapped, in_axes=(0,) + (None,) * num_shared, devices=devices)


def kid_subsets(key: jax.Array, n: int, num_subsets: int, subset_size: int) -> np.ndarray:
  """(num_subsets, subset_size) row indices, each row drawn without replacement."""
  keys = jax.random.split(key, num_subsets)
  return np.asarray(jax.vmap(lambda k: jax.random.permutation(k, n)[:subset_size])(keys))


def _mmd2_unbiased(x: jax.Array, y: jax.Array) -> jax.Array:
  m, d = x.shape
  kernel = lambda a, b: (a @ b.T / d + 1.0) ** 3
  k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
  off_diagonal = lambda k: (jnp.sum(k) - jnp.trace(k)) / (m * (m - 1))
  return off_diagonal(k_xx) + off_diagonal(k_yy) - 2.0 * jnp.mean(k_xy)


def _subset_mmd2(rows: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
  return _mmd2_unbiased(x[rows[0]], y[rows[1]])


def kernel_inception_distance(
  real: np.ndarray,
  fake: np.ndarray,
  key: jax.Array,
  num_subsets: int = 100,
  subset_size: int = 1000,
) -> tuple[float, float]:
  """(mean, std) over subsets of the unbiased polynomial-kernel MMD^2.

  `subset_size` is capped at the smaller set, as in the reference code; each
  subset pairs `subset_size` real rows with as many generated ones.
  """
  m = min(subset_size, len(real), len(fake))
  real_key, fake_key = jax.random.split(key)
  rows_real = kid_subsets(real_key, len(real), num_subsets, m)
  rows_fake = kid_subsets(fake_key, len(fake), num_subsets, m)
  with _float64():
    x, y = _f64(real), _f64(fake)
    rows = jnp.asarray(np.stack([rows_real, rows_fake], 1))
    values = np.asarray(_sharded_map(_subset_mmd2, rows, x, y))
  return float(values.mean()), float(values.std())


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
  """(mean, std) over `splits` equal chunks of exp(mean KL(p(y|x) || p(y)))."""
  n = len(logits) // splits * splits
  if n == 0:
    raise ValueError(f"inception_score needs at least {splits} samples, got {len(logits)}.")
  with _float64():
    scores = np.asarray(_inception_scores(_f64(logits[:n]).reshape(splits, n // splits, -1)))
  return float(scores.mean()), float(scores.std())


@jax.jit
def _inception_scores(logits: jax.Array) -> jax.Array:
  log_p = jax.nn.log_softmax(logits, axis=-1)  # (splits, n, classes)
  log_marginal = jax.nn.logsumexp(log_p, axis=1, keepdims=True) - jnp.log(log_p.shape[1])
  kl = jnp.sum(jnp.exp(log_p) * (log_p - log_marginal), axis=-1)
  return jnp.exp(jnp.mean(kl, axis=1))


def _squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """(n, m) squared Euclidean distances, as one matrix product."""
  squared = jnp.sum(a**2, axis=1)[:, None] + jnp.sum(b**2, axis=1)[None, :] - 2.0 * a @ b.T
  return jnp.maximum(squared, 0.0)


def _row_blocks(x: jax.Array, block: int) -> jax.Array:
  """(n, d) -> (ceil(n / block), block, d), zero rows padding the last block."""
  pad = -len(x) % block
  return jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, block, x.shape[1])


BLOCK = 256  # Rows of distances computed at once in precision/recall.


def _block_radii(rows: jax.Array, x: jax.Array, k: int) -> jax.Array:
  # The smallest distance is the row's own (0); the (k+1)-th is its k-th neighbour.
  return jnp.sqrt(-jax.lax.top_k(-_squared_distances(rows, x), k + 1)[0][:, k])


def _knn_radii(x: jax.Array, k: int) -> jax.Array:
  """Distance from each row of x to its k-th nearest other row."""
  return _sharded_map(_block_radii, _row_blocks(x, BLOCK), x, k=k).reshape(-1)[: len(x)]


def _block_covered(rows: jax.Array, centres: jax.Array, radii: jax.Array) -> jax.Array:
  return jnp.any(_squared_distances(rows, centres) <= radii**2, axis=1)


def _covered(points: jax.Array, centres: jax.Array, radii: jax.Array) -> jax.Array:
  """For each point: is it within radii[j] of some centres[j]?"""
  blocks = _row_blocks(points, BLOCK)
  return _sharded_map(_block_covered, blocks, centres, radii).reshape(-1)[: len(points)]


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
  """Kynkäänniemi et al.'s improved precision and recall with k-NN balls."""
  for name, x in (("real", real), ("generated", fake)):
    if len(x) <= k:
      raise ValueError(f"precision/recall with k={k} needs more than {k} {name} samples.")
  with _float64():
    x, y = _f64(real), _f64(fake)
    precision = np.mean(np.asarray(_covered(y, x, _knn_radii(x, k))))
    recall = np.mean(np.asarray(_covered(x, y, _knn_radii(y, k))))
  return float(precision), float(recall)
