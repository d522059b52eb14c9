"""The VAE family: ELBO with a closed-form KL, beta and KL warm-up, IWAE bound.

Per image, in nats: ELBO = E_q[log p(x|z)] - KL(q(z|x) || N(0, I)), estimated
with one reparameterised sample when training; the held-out split also gets
the importance-weighted bound of Burda et al. (2016, arXiv:1509.00519),
log (1/K) sum_k p(x, z_k) / q(z_k|x), which tightens towards log p(x) as K grows.

Likelihoods (`model.likelihood`):
- `bernoulli`, on pixels in [0, 1] binarised per `data.binarize`: `dynamic`
  (a fresh Bernoulli draw of every pixel each step; held-out images get one
  fixed draw), `fixed` (threshold at 1/2) or `none` (grey levels as targets,
  which is not a normalised likelihood; nats are then not comparable).
- `gaussian`: discretised Gaussian over the 256 pixel levels, per-channel
  learned scale, so nats are a true log-likelihood of 8-bit images.
"""

from collections.abc import Callable
import math

import jax
from jax import lax
import jax.numpy as jnp
import jax.scipy.stats as jstats
import ml_collections
import numpy as np
import optax

from imgen.data import ImageSpec
from imgen.errors import ConfigError
from imgen.models.vae import VAE
from imgen.steps import AXIS
from imgen.steps import Network
from imgen.steps import State
from imgen.steps import adam
from imgen.steps import compute_dtype
from imgen.steps import global_draw
from imgen.steps import global_normal
from imgen.steps import init_network

LIKELIHOODS = ("bernoulli", "gaussian")
BINARIZATIONS = ("dynamic", "fixed", "none")


def gaussian_kl(mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """KL(N(mean, exp(log_var)) || N(0, I)) per row, in closed form."""
  return 0.5 * jnp.sum(mean**2 + jnp.exp(log_var) - 1.0 - log_var, axis=-1)


def bernoulli_log_likelihood(logits: jax.Array, x: jax.Array) -> jax.Array:
  """sum over pixels of x log sigmoid(l) + (1 - x) log(1 - sigmoid(l)), per image."""
  return jnp.sum(x * logits - jax.nn.softplus(logits), axis=(1, 2, 3))


def discretized_gaussian_log_likelihood(
  mean: jax.Array, log_scale: jax.Array, x: jax.Array
) -> jax.Array:
  """log P(x) per image, x on the 256 levels of [-1, 1] (bins 2/255 wide).

  The end bins take the tails; each bin's mass is floored at 1e-12.
  """
  half = 1.0 / 255.0
  scale = jnp.exp(log_scale)
  # The end bins' CDFs are set to 1 and 0 by selection, never computed at +-inf:
  # (inf - mean) / scale would make the gradient 0 * inf = NaN.
  upper = jnp.where(x > 1.0 - half, 1.0, jstats.norm.cdf((x + half - mean) / scale))
  lower = jnp.where(x < -1.0 + half, 0.0, jstats.norm.cdf((x - half - mean) / scale))
  return jnp.sum(jnp.log(jnp.maximum(upper - lower, 1e-12)), axis=(1, 2, 3))


def normal_log_prob(z: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """log N(z; mean, exp(log_var)), summed over the last axis."""
  return -0.5 * jnp.sum(
    math.log(2 * math.pi) + log_var + (z - mean) ** 2 * jnp.exp(-log_var), axis=-1
  )


class VAEFamily:
  """Builds the VAE's state, train/eval steps and images from a config."""

  def __init__(self, config: ml_collections.ConfigDict, spec: ImageSpec):
    m = config.model
    if m.likelihood not in LIKELIHOODS:
      raise ConfigError(f"model.likelihood {m.likelihood!r}; use one of {LIKELIHOODS}.")
    if config.data.binarize not in BINARIZATIONS:
      raise ConfigError(f"data.binarize {config.data.binarize!r}; use one of {BINARIZATIONS}.")
    dtype = compute_dtype(m.dtype)
    self.model = VAE(spec.size, spec.channels, m.latent_dim, m.width, m.upsample, dtype)
    self.spec = spec
    self.likelihood = m.likelihood
    self.binarize = config.data.binarize
    self.beta = m.beta
    self.kl_warmup_steps = m.kl_warmup_steps
    self.iwae_samples = config.eval.iwae_samples
    self.tx = adam(config.optim)
    model = self.model
    self._decode_mean = jax.jit(lambda p, z: self._display(model.apply(p, z, method=VAE.decode)))
    self._encode = jax.jit(lambda p, x: model.apply(p, x, method=VAE.encode)[0])

  def init_state(self, key: jax.Array) -> State:
    x = jnp.zeros((1, *self.spec.shape))
    return State(jnp.zeros((), jnp.int32), init_network(self.model, key, x, self.tx))

  # --- pieces shared by the train and eval steps -------------------------------------------

  def _target(self, images: jax.Array, key: jax.Array) -> jax.Array:
    """What the likelihood scores: binarised [0, 1] pixels or the [-1, 1] image."""
    if self.likelihood == "gaussian":
      return images
    x = (images + 1.0) / 2.0
    if self.binarize == "fixed":
      return (x > 0.5).astype(jnp.float32)
    if self.binarize == "dynamic":
      u = global_draw(jax.random.uniform, key, x.shape[0], x.shape[1:])
      return (u < x).astype(jnp.float32)
    return x

  def _encoder_input(self, target: jax.Array) -> jax.Array:
    return target if self.likelihood == "gaussian" else 2.0 * target - 1.0

  def _log_likelihood(self, params, decoded: jax.Array, target: jax.Array) -> jax.Array:
    if self.likelihood == "gaussian":
      log_scale = params["log_scale"].reshape(1, 1, 1, -1)
      return discretized_gaussian_log_likelihood(decoded, log_scale, target)
    return bernoulli_log_likelihood(decoded, target)

  def _display(self, decoded: jax.Array) -> jax.Array:
    """Decoder output -> its mean image in [-1, 1]."""
    if self.likelihood == "gaussian":
      return jnp.clip(decoded, -1.0, 1.0)
    return 2.0 * jax.nn.sigmoid(decoded) - 1.0

  def _elbo_terms(self, params, target, eps):
    """(log p(x|z), KL) per image with z = mean + std * eps."""
    v = {"params": params}
    mean, log_var = self.model.apply(v, self._encoder_input(target), method=VAE.encode)
    z = mean + jnp.exp(0.5 * log_var) * eps
    decoded = self.model.apply(v, z, method=VAE.decode)
    return self._log_likelihood(params, decoded, target), gaussian_kl(mean, log_var)

  # --- steps ---------------------------------------------------------------------------------

  def make_train_step(self) -> Callable:
    tx, latent = self.tx, self.model.latent_dim
    warmup, beta, dims = self.kl_warmup_steps, self.beta, math.prod(self.spec.shape)

    def train_step(state: State, batch: dict, key: jax.Array):
      key = jax.random.fold_in(key, state.step)
      target = self._target(batch["image"], jax.random.fold_in(key, 0))
      eps = global_normal(jax.random.fold_in(key, 1), target.shape[0], (latent,))
      weight = beta * (jnp.minimum(1.0, (state.step + 1) / warmup) if warmup else 1.0)

      def loss_fn(params):
        ll, kl = self._elbo_terms(params, target, eps)
        return jnp.mean(weight * kl - ll), (ll, kl)

      (loss, (ll, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.net.params)
      grads = lax.pmean(grads, AXIS)
      updates, opt_state = tx.update(grads, state.net.opt_state, state.net.params)
      params = optax.apply_updates(state.net.params, updates)
      elbo = jnp.mean(ll - kl)
      metrics = lax.pmean(
        {"loss": loss, "elbo": elbo, "recon_nll": -jnp.mean(ll), "kl": jnp.mean(kl)}, AXIS
      )
      metrics["bits_per_dim"] = -metrics["elbo"] / (dims * math.log(2))
      metrics["kl_weight"] = weight
      metrics["grad_norm"] = optax.tree.norm(grads)
      new = State(state.step + 1, Network(params, state.net.batch_stats, opt_state))
      return new, metrics

    return train_step

  def make_eval_step(self) -> Callable:
    """Per-replica sums over the held-out batch: ELBO terms and the IWAE bound."""
    latent, k_samples = self.model.latent_dim, self.iwae_samples

    def eval_step(state: State, batch: dict, key: jax.Array):
      params, mask = state.net.params, batch["mask"]
      target = self._target(batch["image"], jax.random.fold_in(key, 0))
      n = target.shape[0]
      v = {"params": params}
      mean, log_var = self.model.apply(v, self._encoder_input(target), method=VAE.encode)
      std = jnp.exp(0.5 * log_var)
      kl = gaussian_kl(mean, log_var)

      def log_weight(k):
        eps = global_normal(jax.random.fold_in(key, 1 + k), n, (latent,))
        z = mean + std * eps
        ll = self._log_likelihood(params, self.model.apply(v, z, method=VAE.decode), target)
        zeros = jnp.zeros_like(z)
        log_w = ll + normal_log_prob(z, zeros, zeros) - normal_log_prob(z, mean, log_var)
        return log_w, ll

      log_w, ll = lax.map(log_weight, jnp.arange(k_samples))  # (K, n) each.
      iwae = jax.nn.logsumexp(log_w, axis=0) - math.log(k_samples)
      sums = {
        "elbo": ll[0] - kl,  # The single-sample ELBO, as in training.
        "recon_nll": -ll[0],
        "kl": kl,
        "iwae": iwae,
        "count": jnp.ones_like(iwae),
      }
      return lax.psum(jax.tree.map(lambda x: jnp.sum(x * mask), sums), AXIS)

    return eval_step

  def make_generate(self) -> Callable[[State, jax.Array, int], jax.Array]:
    """Per-replica `generate(state, key, local_batch)`: decoder means of prior draws."""
    model = self.model

    def generate(state: State, key: jax.Array, local_batch: int) -> jax.Array:
      z = global_normal(key, local_batch, (model.latent_dim,))
      return self._display(model.apply({"params": state.net.params}, z, method=VAE.decode))

    return generate

  def summarize_eval(self, sums: dict) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    count = float(sums["count"])
    per_image = {k: float(v) / count for k, v in sums.items() if k != "count"}
    dims = math.prod(self.spec.shape)
    scalars = {
      "elbo": per_image["elbo"],
      "recon_nll": per_image["recon_nll"],
      "kl": per_image["kl"],
      "iwae_nll": -per_image["iwae"],
      "bits_per_dim": -per_image["elbo"] / (dims * math.log(2)),
      "iwae_bits_per_dim": -per_image["iwae"] / (dims * math.log(2)),
      "num_images": count,
    }
    return scalars, {}

  @staticmethod
  def headline(metrics: dict[str, float]) -> dict[str, float]:
    return {k: metrics[k] for k in ("elbo", "recon_nll", "kl", "bits_per_dim")}

  # --- images --------------------------------------------------------------------------------

  def sample_images(
    self, state: State, key: jax.Array, num: int, held_out: np.ndarray
  ) -> dict[str, np.ndarray]:
    """Prior samples; held-out inputs (odd rows) over their reconstructions; and
    rows of latent interpolations between pairs of held-out images."""
    v = {"params": state.net.params}
    cols = 8
    prior = self._decode_mean(v, jax.random.normal(key, (num, self.model.latent_dim)))
    inputs = held_out[: (num // (2 * cols)) * cols]
    recon = np.asarray(self._decode_mean(v, self._encode(v, inputs)))
    rows = [
      np.concatenate([inputs[i : i + cols], recon[i : i + cols]])
      for i in range(0, len(inputs), cols)
    ]
    pairs = num // cols
    a, b = self._encode(v, held_out[:pairs]), self._encode(v, held_out[pairs : 2 * pairs])
    t = jnp.linspace(0.0, 1.0, cols)[None, :, None]
    path = (a[:, None] * (1 - t) + b[:, None] * t).reshape(pairs * cols, -1)
    return {
      "prior_samples": np.asarray(prior),
      "reconstructions": np.concatenate(rows) if rows else inputs,
      "interpolations": np.asarray(self._decode_mean(v, path)),
    }
