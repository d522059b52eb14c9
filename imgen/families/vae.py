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

With `optim.ema_decay` the held-out metrics, samples and grids use the EMA
of the weights.
"""

import math

import jax
from jax import lax
import jax.numpy as jnp
import jax.scipy.stats as jstats
import ml_collections
import numpy as np

from imgen.core import parallel
from imgen.core.errors import ConfigError
from imgen.core.optim import make_optimizer
from imgen.core.train_state import SingleNetworkState
from imgen.core.train_state import TrainState
from imgen.data import VALID
from imgen.data.spec import DataSpec
from imgen.families.base import Evaluates
from imgen.families.base import Family
from imgen.families.base import Generates
from imgen.families.base import reject_condition
from imgen.models import compute_dtype
from imgen.models.conv_vae import VAE
from imgen.models.dcgan import geometry

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


class VAEFamily(Family, Evaluates, Generates):
  """Builds the VAE's state, train/eval steps and images from a config."""

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    m = config.model
    if m.likelihood not in LIKELIHOODS:
      raise ConfigError(f"model.likelihood {m.likelihood!r}; use one of {LIKELIHOODS}.")
    if config.data.binarize not in BINARIZATIONS:
      raise ConfigError(f"data.binarize {config.data.binarize!r}; use one of {BINARIZATIONS}.")
    geometry(spec.size, "the conv VAE")
    self.image = spec.image
    self.model = VAE(
      self.image.size,
      self.image.channels,
      m.latent_dim,
      m.width,
      m.upsample,
      compute_dtype(m.dtype),
    )
    self.likelihood = m.likelihood
    self.binarize = config.data.binarize
    self.beta = m.beta
    self.kl_warmup_steps = m.kl_warmup_steps
    self.iwae_samples = config.eval.iwae_samples
    self.optimizer = make_optimizer(config.optim, config.train.num_steps, "optim")
    model = self.model
    self._decode_mean = jax.jit(lambda p, z: self._display(model.apply(p, z, method=VAE.decode)))
    self._encode = jax.jit(lambda p, x: model.apply(p, x, method=VAE.encode)[0])

  def init_state(self, key: jax.Array) -> SingleNetworkState:
    x = jnp.zeros((1, *self.image.shape))
    return SingleNetworkState.create(TrainState.create(self.model, key, x, self.optimizer))

  # --- pieces shared by the train and eval steps -------------------------------------------

  def _target(self, images: jax.Array, key: jax.Array) -> jax.Array:
    """What the likelihood scores: binarised [0, 1] pixels or the [-1, 1] image."""
    if self.likelihood == "gaussian":
      return images
    x = (images + 1.0) / 2.0
    if self.binarize == "fixed":
      return (x > 0.5).astype(jnp.float32)
    if self.binarize == "dynamic":
      u = parallel.global_draw(jax.random.uniform, key, x.shape[0], x.shape[1:])
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

  def make_train_step(self):
    latent = self.model.latent_dim
    warmup, beta, dims = self.kl_warmup_steps, self.beta, math.prod(self.image.shape)

    def train_step(state: SingleNetworkState, batch: dict, key: jax.Array):
      key = jax.random.fold_in(key, state.step)
      target = self._target(batch["image"], jax.random.fold_in(key, 0))
      eps = parallel.global_normal(jax.random.fold_in(key, 1), target.shape[0], (latent,))
      weight = beta * (jnp.minimum(1.0, (state.step + 1) / warmup) if warmup else 1.0)

      def loss_fn(params):
        ll, kl = self._elbo_terms(params, target, eps)
        return jnp.mean(weight * kl - ll), (ll, kl)

      (loss, (ll, kl)), grads = parallel.value_and_mean_grad(loss_fn)(state.net.params)
      elbo = jnp.mean(ll - kl)
      metrics = parallel.device_mean(
        {"loss": loss, "elbo": elbo, "recon_nll": -jnp.mean(ll), "kl": jnp.mean(kl)}
      )
      metrics["bits_per_dim"] = -metrics["elbo"] / (dims * math.log(2))
      metrics["kl_weight"] = weight
      metrics.update(state.net.update_metrics(grads))
      return state.replace(step=state.step + 1, net=state.net.apply_gradients(grads=grads)), metrics

    return train_step

  def make_eval_step(self):
    """Per-replica sums over the held-out batch: ELBO terms and the IWAE bound."""
    latent, k_samples = self.model.latent_dim, self.iwae_samples

    def eval_step(state: SingleNetworkState, batch: dict, key: jax.Array):
      params, valid = state.net.eval_params, batch[VALID]
      target = self._target(batch["image"], jax.random.fold_in(key, 0))
      n = target.shape[0]
      v = {"params": params}
      mean, log_var = self.model.apply(v, self._encoder_input(target), method=VAE.encode)
      std = jnp.exp(0.5 * log_var)
      kl = gaussian_kl(mean, log_var)

      def log_weight(k):
        eps = parallel.global_normal(jax.random.fold_in(key, 1 + k), n, (latent,))
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
      return lax.psum(jax.tree.map(lambda x: jnp.sum(x * valid), sums), parallel.AXIS)

    return eval_step

  def summarize_eval(self, sums: dict) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    count = float(sums["count"])
    per_image = {k: float(v) / count for k, v in sums.items() if k != "count"}
    dims = math.prod(self.image.shape)
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

  def generate(self, state: SingleNetworkState, key: jax.Array, n: int, condition=None):
    """Decoder means of this replica's rows of a global batch of prior draws."""
    reject_condition("vae", condition)
    z = parallel.global_normal(key, n, (self.model.latent_dim,))
    return self._display(self.model.apply({"params": state.net.eval_params}, z, method=VAE.decode))

  def show(self, state: SingleNetworkState, key, batch) -> dict[str, np.ndarray]:
    """Held-out inputs (odd rows) over their reconstructions, and rows of latent
    interpolations between pairs of held-out images."""
    del key
    v = {"params": state.net.eval_params}
    held_out, cols = batch["image"], 8
    num = len(held_out)
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
      "reconstructions": np.concatenate(rows) if rows else inputs,
      "interpolations": np.asarray(self._decode_mean(v, path)),
    }
