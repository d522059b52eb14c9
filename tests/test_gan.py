"""GAN losses against a hand computation of the binary cross-entropies, and
what a GAN run reports."""

import os

import jax.numpy as jnp
import numpy as np

from imgen.methods import gan_losses


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def test_losses_equal_bce_by_hand():
  real = np.array([2.0, -0.5, 0.3])
  fake = np.array([-1.0, 0.7])
  d_expected = -np.mean(np.log(_sigmoid(real))) - np.mean(np.log(1.0 - _sigmoid(fake)))
  g_expected = -np.mean(np.log(_sigmoid(fake)))
  np.testing.assert_allclose(
    gan_losses.non_saturating_d(jnp.array(real), jnp.array(fake)), d_expected, rtol=1e-6
  )
  np.testing.assert_allclose(gan_losses.non_saturating_g(jnp.array(fake)), g_expected, rtol=1e-6)


def test_known_values():
  # Logit 0 is D = 1/2: each term is log 2.
  np.testing.assert_allclose(
    gan_losses.non_saturating_d(jnp.zeros(4), jnp.zeros(4)), 2 * np.log(2), rtol=1e-6
  )
  np.testing.assert_allclose(gan_losses.non_saturating_g(jnp.zeros(4)), np.log(2), rtol=1e-6)


def test_losses_stay_finite_for_confident_logits():
  big = jnp.array([200.0, -200.0])
  assert np.isfinite(gan_losses.non_saturating_d(big, big))
  np.testing.assert_allclose(gan_losses.non_saturating_g(jnp.array([-200.0])), 200.0, rtol=1e-6)


def test_a_run_reports_both_networks_and_draws_samples(smoke_run):
  _, workdir, metrics = smoke_run("gan")
  expected = {"d_loss", "g_loss", "d_real", "d_fake", "g_grad_norm", "d_grad_norm"}
  assert expected | {"g_learning_rate", "d_learning_rate"} <= set(metrics), sorted(metrics)
  assert os.path.exists(os.path.join(workdir, "samples", "samples_0000006.png"))
