"""Every metric against an independent NumPy/SciPy computation and known cases."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import scipy.special
import scipy.stats

from imgen.methods import metrics


def _features(seed: int, n: int = 300, d: int = 16, shift: float = 0.0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  mixing = rng.normal(size=(d, d)) / np.sqrt(d)
  return rng.normal(size=(n, d)) @ mixing + shift


def _fid_scipy(a: np.ndarray, b: np.ndarray) -> float:
  """The reference formula: scipy's sqrtm of the covariance product."""
  mu1, mu2 = a.mean(0), b.mean(0)
  s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  covmean = scipy.linalg.sqrtm(s1 @ s2).real
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_statistics_match_numpy():
  x = _features(0)
  mean, cov = metrics.feature_statistics(x)
  np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("d", [4, 64])
def test_fid_matches_scipy_sqrtm(d):
  a, b = _features(1, d=d), _features(2, d=d, shift=0.3) * 1.5
  np.testing.assert_allclose(metrics.fid_from_features(a, b), _fid_scipy(a, b), rtol=1e-6)


def test_fid_known_cases():
  a = _features(3)
  assert abs(metrics.fid_from_features(a, a)) < 1e-8
  d = np.linspace(-1.0, 2.0, a.shape[1])
  np.testing.assert_allclose(metrics.fid_from_features(a, a + d), np.sum(d**2), rtol=1e-8)
  # Two Gaussians with diagonal covariances: sum (s1 + s2 - 2 sqrt(s1 s2)) in closed form.
  s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
  expected = np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
  got = metrics.frechet_distance(np.zeros(3), np.diag(s1), np.zeros(3), np.diag(s2))
  np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def _mmd2_numpy(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased MMD^2, written with explicit pair loops over off-diagonal terms."""
  m, d = x.shape
  k = lambda a, b: (a @ b / d + 1.0) ** 3
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
  return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / m**2


def test_kid_matches_numpy_on_the_same_subsets():
  real, fake = _features(4, n=80), _features(5, n=60, shift=0.5)
  key = jax.random.key(7)
  mean, std = metrics.kernel_inception_distance(real, fake, key, num_subsets=5, subset_size=30)
  real_key, fake_key = jax.random.split(key)
  rows_r = metrics.kid_subsets(real_key, 80, 5, 30)
  rows_f = metrics.kid_subsets(fake_key, 60, 5, 30)
  assert all(len(set(r)) == 30 for r in rows_r)  # Without replacement within a subset.
  values = [_mmd2_numpy(real[r], fake[f]) for r, f in zip(rows_r, rows_f, strict=True)]
  np.testing.assert_allclose(mean, np.mean(values), rtol=1e-9)
  np.testing.assert_allclose(std, np.std(values), rtol=1e-7)


def test_kid_is_unbiased_near_zero_for_one_distribution():
  rng = np.random.default_rng(0)
  values = [
    metrics.kernel_inception_distance(
      rng.normal(size=(100, 8)), rng.normal(size=(100, 8)), jax.random.key(i), 1, 100
    )[0]
    for i in range(30)
  ]
  # Unbiased: the mean over independent pairs is ~0 (a biased estimator sits well above).
  assert abs(np.mean(values)) < 3 * np.std(values) / np.sqrt(len(values))
  shifted = metrics.kernel_inception_distance(
    rng.normal(size=(100, 8)), rng.normal(size=(100, 8)) + 1.0, jax.random.key(0), 1, 100
  )[0]
  assert shifted > 10 * np.std(values)


def test_inception_score_matches_scipy():
  logits = np.random.default_rng(1).normal(size=(200, 10)) * 3
  mean, std = metrics.inception_score(logits, splits=4)
  p = scipy.special.softmax(logits, axis=1)
  scores = []
  for part in np.split(p, 4):
    marginal = part.mean(0)
    scores.append(np.exp(np.mean([scipy.stats.entropy(row, marginal) for row in part])))
  np.testing.assert_allclose(mean, np.mean(scores), rtol=1e-10)
  np.testing.assert_allclose(std, np.std(scores), rtol=1e-8)


def test_inception_score_known_cases():
  # Uniform predictions: 1. Confident predictions spread evenly over C classes: C.
  np.testing.assert_allclose(metrics.inception_score(np.zeros((40, 10)), 2)[0], 1.0)
  confident = np.tile(np.eye(10) * 50.0, (4, 1))
  np.testing.assert_allclose(metrics.inception_score(confident, 2)[0], 10.0, rtol=1e-6)


def _precision_recall_numpy(real, fake, k):
  d_rr = scipy.spatial.distance.cdist(real, real)
  d_ff = scipy.spatial.distance.cdist(fake, fake)
  d_fr = scipy.spatial.distance.cdist(fake, real)
  radii_r = np.sort(d_rr, axis=1)[:, k]
  radii_f = np.sort(d_ff, axis=1)[:, k]
  precision = np.mean([(d_fr[j] <= radii_r).any() for j in range(len(fake))])
  recall = np.mean([(d_fr[:, i] <= radii_f).any() for i in range(len(real))])
  return precision, recall


@pytest.mark.parametrize("k", [1, 3])
def test_precision_recall_match_scipy_cdist(k):
  # 300 and 517 rows: neither is a multiple of the 256-row blocks.
  real, fake = _features(6, n=300), _features(7, n=517, shift=0.3) * 0.8
  got = metrics.precision_recall(real, fake, k=k)
  expected = _precision_recall_numpy(real, fake, k)
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
  assert 0.0 < got[0] < 1.0 and 0.0 < got[1] < 1.0  # Not a trivial case.


def test_precision_recall_known_cases():
  real = _features(8)
  assert metrics.precision_recall(real, real, k=3) == (1.0, 1.0)
  far = metrics.precision_recall(real, real + 100.0, k=3)
  assert far == (0.0, 0.0)
  # Generated samples collapsed into a small part of the real cloud: precise, low recall.
  collapsed = real[np.argsort(np.linalg.norm(real - real[0], axis=1))[:10]]
  precision, recall = metrics.precision_recall(real, collapsed, k=3)
  assert precision == 1.0 and recall < 0.5


_SHARDED_CHECK = """
import json, sys
import jax, numpy as np
from imgen.methods import metrics
rng = np.random.default_rng(7)
real, fake = rng.standard_normal((300, 16)), rng.standard_normal((280, 16)) + 0.3
key = jax.random.key(0)
kid = metrics.kernel_inception_distance(real, fake, key, num_subsets=7, subset_size=50)
print(json.dumps({"devices": jax.local_device_count(), "kid": kid,
                  "pr": metrics.precision_recall(real, fake, k=3)}))
"""


def test_kid_and_precision_recall_split_over_devices_give_the_same_values():
  """KID's subsets and precision/recall's row blocks split over 4 devices (7 subsets and
  2 blocks: uneven, so padding is exercised) give what one device gives."""
  results = []
  for devices in (1, 4):
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(devices), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
      [sys.executable, "-c", _SHARDED_CHECK], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results.append(json.loads(done.stdout.strip().splitlines()[-1]))
  assert [r["devices"] for r in results] == [1, 4]
  np.testing.assert_allclose(results[1]["kid"], results[0]["kid"], rtol=1e-12)
  assert results[1]["pr"] == results[0]["pr"]
  assert 0 < results[0]["pr"][0] < 1 and 0 < results[0]["pr"][1] < 1


def test_on_tpu_the_float64_arithmetic_runs_on_the_host_cpu(monkeypatch):
  """TPU has no float64: there every metric runs on the host's CPU devices,
  through the same code (here, on CPU, the same values)."""
  real, fake = _features(10, n=90), _features(11, n=70, shift=0.3)
  logits = _features(12, n=40, d=10)

  def every_metric():
    kid = metrics.kernel_inception_distance(real, fake, jax.random.key(0), 4, 30)
    return [
      metrics.fid_from_features(real, fake),
      *kid,
      *metrics.inception_score(logits, 4),
      *metrics.precision_recall(real, fake, 3),
    ]

  on_devices = every_metric()
  assert metrics.float64_devices() == jax.local_devices()
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert metrics.float64_devices() == jax.local_devices(backend="cpu")
  np.testing.assert_allclose(every_metric(), on_devices, rtol=1e-12)
