"""VAE math against independent computations, model shapes, and what a run reports."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from configs import vae as vae_config
from imgen.core.errors import ConfigError
from imgen.data import DataSpec
from imgen.families import vae
from imgen.models.conv_vae import VAE


def test_kl_of_standard_normal_is_zero():
  np.testing.assert_allclose(vae.gaussian_kl(jnp.zeros((3, 5)), jnp.zeros((3, 5))), 0.0)


def test_kl_matches_a_monte_carlo_estimate():
  rng = np.random.default_rng(0)
  mean, log_var = rng.normal(size=4), rng.normal(size=4) * 0.5
  std = np.exp(0.5 * log_var)
  z = mean + std * rng.standard_normal((400_000, 4))
  mc = np.mean(
    np.sum(stats.norm.logpdf(z, mean, std) - stats.norm.logpdf(z), axis=1)
  )  # E_q[log q(z) - log p(z)]
  np.testing.assert_allclose(vae.gaussian_kl(jnp.array(mean), jnp.array(log_var)), mc, rtol=1e-2)


def test_bernoulli_log_likelihood_matches_scipy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 3, 3, 1)) * 3
  x = (rng.uniform(size=logits.shape) < 0.5).astype(np.float64)
  expected = stats.bernoulli.logpmf(x, 1 / (1 + np.exp(-logits))).sum(axis=(1, 2, 3))
  got = vae.bernoulli_log_likelihood(jnp.array(logits), jnp.array(x))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # Logit 0 is p = 1/2: every pixel costs log 2 nats.
  np.testing.assert_allclose(
    vae.bernoulli_log_likelihood(jnp.zeros((1, 28, 28, 1)), jnp.ones((1, 28, 28, 1))),
    -784 * np.log(2),
    rtol=1e-6,
  )


def test_discretized_gaussian_is_a_distribution_over_the_256_levels():
  levels = jnp.arange(256, dtype=jnp.float32) * (2.0 / 255.0) - 1.0
  x = levels.reshape(256, 1, 1, 1)
  for mean, log_scale in [(0.3, -2.0), (-0.95, -4.0), (0.0, 1.0)]:
    m = jnp.full_like(x, mean)
    log_p = vae.discretized_gaussian_log_likelihood(m, jnp.array(log_scale), x)
    np.testing.assert_allclose(jnp.sum(jnp.exp(log_p)), 1.0, rtol=1e-5)
  # An interior level's mass is the normal CDF over its bin.
  s = np.exp(-2.0)
  v = float(levels[100])
  expected = np.log(stats.norm.cdf(v + 1 / 255, 0.3, s) - stats.norm.cdf(v - 1 / 255, 0.3, s))
  got = vae.discretized_gaussian_log_likelihood(
    jnp.full((1, 1, 1, 1), 0.3), jnp.array(-2.0), jnp.full((1, 1, 1, 1), v)
  )
  np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_discretized_gaussian_gradients_are_finite_at_the_end_bins():
  # Black and white pixels (the end bins) are most of an MNIST digit.
  x = jnp.array([-1.0, 1.0, 0.2]).reshape(3, 1, 1, 1)

  def total(mean, log_scale):
    return jnp.sum(vae.discretized_gaussian_log_likelihood(mean, log_scale, x))

  grads = jax.grad(total, argnums=(0, 1))(jnp.zeros_like(x), jnp.array(-1.0))
  assert all(np.isfinite(np.asarray(g)).all() for g in grads)
  # And they match finite differences of the log-likelihood.
  eps = 1e-3
  numeric = (total(jnp.zeros_like(x), -1.0 + eps) - total(jnp.zeros_like(x), -1.0 - eps)) / (
    2 * eps
  )
  np.testing.assert_allclose(grads[1], numeric, rtol=1e-2)


def test_normal_log_prob_matches_scipy():
  rng = np.random.default_rng(2)
  z, mean, log_var = rng.normal(size=(3, 2, 6))
  expected = stats.norm.logpdf(z, mean, np.exp(0.5 * log_var)).sum(-1)
  np.testing.assert_allclose(vae.normal_log_prob(z, mean, log_var), expected, rtol=1e-5)


def test_shapes():
  model = VAE(28, 1, latent_dim=5, width=8)
  x = jnp.zeros((3, 28, 28, 1))
  variables = model.init(jax.random.key(0), x)
  decoded, mean, log_var = model.apply(variables, x)
  assert decoded.shape == (3, 28, 28, 1) and mean.shape == log_var.shape == (3, 5)


def test_images_have_the_expected_layout():
  config = vae_config.get_config("smoke")
  family = vae.VAEFamily(config, DataSpec.of_images(28, 1))
  state = family.init_state(jax.random.key(0))
  held_out = np.random.default_rng(0).uniform(-1, 1, (16, 28, 28, 1)).astype(np.float32)
  images = family.show(state, jax.random.key(1), {"image": held_out, "label": np.zeros(16)})
  assert {k: v.shape for k, v in images.items()} == {
    "reconstructions": (16, 28, 28, 1),
    "interpolations": (16, 28, 28, 1),
  }
  # Rows alternate: 8 held-out inputs, then their 8 reconstructions.
  np.testing.assert_array_equal(images["reconstructions"][:8], held_out[:8])
  for v in images.values():
    assert np.all(np.abs(v) <= 1.0)


def test_a_run_reports_the_elbo_and_iwae_and_draws_reconstructions(smoke_run):
  _, workdir, metrics = smoke_run("vae")
  expected = {"elbo", "kl", "recon_nll", "learning_rate", "test/elbo", "test/iwae_nll"}
  assert expected | {"test/bits_per_dim"} <= set(metrics), sorted(metrics)
  for name in ("samples", "reconstructions", "interpolations"):
    assert os.path.exists(os.path.join(workdir, "samples", f"{name}_0000006.png")), name


def test_an_impossible_size_names_the_vae():
  config = vae_config.get_config("smoke")
  config.model.image_size = 30
  with pytest.raises(ConfigError, match="image_size 30 cannot be made by the conv VAE"):
    vae.VAEFamily(config, DataSpec.of_images(30, 1))
