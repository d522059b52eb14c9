"""GAN objectives, free of any network: the losses of D and G (non-saturating,
hinge, Wasserstein), the gradient penalties (WGAN-GP, R1) and the top-k
generator update. The GAN family (`imgen.families.gan`) picks them from its
config; each is tested against a hand computation (tests/test_gan*.py)."""

import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import optax

from imgen.core import parallel


def non_saturating_d(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """BCE of D with real -> 1 and fake -> 0: -log D(x) - log(1 - D(G(z))).

  softplus(-l) = -log(sigmoid(l)) and softplus(l) = -log(1 - sigmoid(l)),
  written so they stay finite for any logit.
  """
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def _mean(x: jax.Array, weights: jax.Array | None) -> jax.Array:
  return jnp.mean(x) if weights is None else jnp.sum(weights * x)


def non_saturating_g(fake_logits: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Non-saturating generator loss: -log D(G(z)), averaged (or summed with `weights`)."""
  return _mean(jax.nn.softplus(-fake_logits), weights)


def hinge_d(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]."""
  return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def wasserstein_d(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """The critic's loss E[D(G(z))] - E[D(x)] (the gradient penalty is added apart)."""
  return jnp.mean(fake_logits) - jnp.mean(real_logits)


def critic_g(fake_logits: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """-E[D(G(z))]: the generator loss of the hinge and Wasserstein GANs."""
  return -_mean(fake_logits, weights)


LOSSES = {  # objective.loss -> (D's loss, G's loss)
  "non_saturating": (non_saturating_d, non_saturating_g),
  "hinge": (hinge_d, critic_g),
  "wgan_gp": (wasserstein_d, critic_g),
}


def input_gradients(logits_fn, x: jax.Array) -> jax.Array:
  """d logit_i / d x_i for each row i (rows independent: no BatchNorm)."""
  return jax.grad(lambda x: jnp.sum(logits_fn(x)))(x)


def gradient_penalty(logits_fn, x: jax.Array) -> jax.Array:
  """WGAN-GP's mean of (||d logit_i / d x_i||_2 - 1)^2 over the rows of `x`."""
  grads = input_gradients(logits_fn, x)
  norms = optax.safe_norm(grads.reshape(grads.shape[0], -1), 0.0, axis=1)
  return jnp.mean((norms - 1.0) ** 2)


def r1_penalty(logits_fn, x: jax.Array) -> jax.Array:
  """R1's mean of ||d logit_i / d x_i||_2^2 over the (real) rows of `x`."""
  grads = input_gradients(logits_fn, x)
  return jnp.mean(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=1))


def top_k_count(step: jax.Array, batch: int, o: ml_collections.ConfigDict) -> jax.Array:
  """k of the top-k generator update at train step `step`: the global `batch`
  times `topk_decay` once every `topk_every` steps, down to `topk_min` of it."""
  fraction = jnp.maximum(o.topk_min, o.topk_decay ** (step // o.topk_every).astype(jnp.float32))
  return jnp.maximum(1, jnp.floor(fraction * batch)).astype(jnp.int32)


def top_k_weights(logits: jax.Array, k: jax.Array) -> jax.Array:
  """Weights of this replica's fakes in G's loss: 1/k for the k fakes of the
  global batch that D scores as most real, 0 for the rest (Sinha et al. 2020),
  times the device count, since G's gradients are averaged over the devices."""
  everything = lax.all_gather(lax.stop_gradient(logits), parallel.AXIS).reshape(-1)
  threshold = jnp.sort(everything)[everything.size - k]
  replicas = lax.psum(1, parallel.AXIS)
  return (lax.stop_gradient(logits) >= threshold).astype(jnp.float32) * (replicas / k)
