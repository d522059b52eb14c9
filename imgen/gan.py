"""The GAN family: state, non-saturating losses, the pure train step, sampling.

One train step is the DCGAN paper's alternating update (as in the PyTorch
DCGAN tutorial): the generator makes one fake batch; the discriminator takes
an Adam step on real (label 1) and detached fake (label 0) images, each batch
through D on its own so BatchNorm sees them apart; then the generator takes an
Adam step on the non-saturating loss -log D(G(z)) through the updated D,
reusing the same fake batch (`jax.vjp` keeps G's forward pass, so G runs
forward once per step, as in PyTorch).
"""

from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from imgen import models
from imgen.data import ImageSpec
from imgen.errors import ConfigError
from imgen.steps import AXIS
from imgen.steps import Network
from imgen.steps import adam
from imgen.steps import compute_dtype
from imgen.steps import global_normal
from imgen.steps import init_network

PyTree = Any


@flax.struct.dataclass
class GANState:
  step: jax.Array
  g: Network
  d: Network


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """BCE of D with real -> 1 and fake -> 0: -log D(x) - log(1 - D(G(z))).

  softplus(-l) = -log(sigmoid(l)) and softplus(l) = -log(1 - sigmoid(l)),
  written so they stay finite for any logit.
  """
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def generator_loss(fake_logits: jax.Array) -> jax.Array:
  """Non-saturating generator loss: -log D(G(z))."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


class GAN:
  """Builds the GAN's state, train step and samples from a config."""

  def __init__(self, config: ml_collections.ConfigDict, spec: ImageSpec):
    if config.model.name not in models.GANS:
      raise ConfigError(
        f"model.name {config.model.name!r} is not a GAN; known: {sorted(models.GANS)}."
      )
    if config.model.upsample not in models.UPSAMPLE_IMPLEMENTATIONS:
      raise ConfigError(
        f"model.upsample {config.model.upsample!r} is unknown; "
        f"known: {sorted(models.UPSAMPLE_IMPLEMENTATIONS)}."
      )
    make_g, make_d = models.GANS[config.model.name]
    dtype = compute_dtype(config.model.dtype)
    common = dict(image_size=spec.size, width=None, axis_name=AXIS, dtype=dtype)
    self.generator = make_g(
      **{**common, "width": config.model.g_width},
      channels=spec.channels,
      upsample=config.model.upsample,
    )
    self.discriminator = make_d(
      **{**common, "width": config.model.d_width}, downsample=config.model.upsample
    )
    self.latent_dim = config.model.latent_dim
    self.spec = spec
    self.g_tx = adam(config.optim.g)
    self.d_tx = adam(config.optim.d)
    generator = self.generator
    self._sample = jax.jit(lambda state, z: generator.apply(state.g.variables(), z, train=False))

  def init_state(self, key: jax.Array) -> GANState:
    g_key, d_key = jax.random.split(key)
    z = jnp.zeros((1, self.latent_dim))
    x = jnp.zeros((1, *self.spec.shape))
    return GANState(
      step=jnp.zeros((), jnp.int32),
      g=init_network(self.generator, g_key, z, self.g_tx),
      d=init_network(self.discriminator, d_key, x, self.d_tx),
    )

  def make_train_step(self) -> Callable[[GANState, dict, jax.Array], tuple[GANState, dict]]:
    """Returns the per-replica step; run it under pmap with axis `AXIS`."""
    generator, discriminator = self.generator, self.discriminator
    g_tx, d_tx, latent_dim = self.g_tx, self.d_tx, self.latent_dim

    def train_step(state: GANState, batch: dict, key: jax.Array):
      real = batch["image"]
      z = global_normal(jax.random.fold_in(key, state.step), real.shape[0], (latent_dim,))

      def generate(g_params):
        fake, updates = generator.apply(
          state.g.variables(g_params), z, train=True, mutable=["batch_stats"]
        )
        return fake, updates["batch_stats"]

      fake, g_vjp, g_batch_stats = jax.vjp(generate, state.g.params, has_aux=True)

      def d_loss_fn(d_params):
        run = lambda stats, x: discriminator.apply(
          {"params": d_params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
        )
        real_logits, upd = run(state.d.batch_stats, real)
        fake_logits, upd = run(upd["batch_stats"], lax.stop_gradient(fake))
        loss = discriminator_loss(real_logits, fake_logits)
        return loss, (upd["batch_stats"], real_logits, fake_logits)

      (d_loss, (d_stats, real_logits, fake_logits)), d_grads = jax.value_and_grad(
        d_loss_fn, has_aux=True
      )(state.d.params)
      d_grads = lax.pmean(d_grads, AXIS)
      d_updates, d_opt_state = d_tx.update(d_grads, state.d.opt_state, state.d.params)
      d_params = optax.apply_updates(state.d.params, d_updates)

      def g_loss_fn(fake):
        logits, upd = discriminator.apply(
          {"params": d_params, "batch_stats": d_stats}, fake, train=True, mutable=["batch_stats"]
        )
        return generator_loss(logits), (upd["batch_stats"], logits)

      (g_loss, (d_stats, gen_logits)), fake_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
      (g_grads,) = g_vjp(fake_grad)
      g_grads = lax.pmean(g_grads, AXIS)
      g_updates, g_opt_state = g_tx.update(g_grads, state.g.opt_state, state.g.params)
      g_params = optax.apply_updates(state.g.params, g_updates)

      new_state = GANState(
        step=state.step + 1,
        g=Network(g_params, g_batch_stats, g_opt_state),
        d=Network(d_params, d_stats, d_opt_state),
      )
      metrics = {
        "d_loss": d_loss,
        "g_loss": g_loss,
        "d_real": jnp.mean(nn.sigmoid(real_logits)),
        "d_fake": jnp.mean(nn.sigmoid(fake_logits)),
        "d_fake_after": jnp.mean(nn.sigmoid(gen_logits)),
      }
      metrics = lax.pmean(metrics, AXIS)
      metrics["d_grad_norm"] = optax.tree.norm(d_grads)
      metrics["g_grad_norm"] = optax.tree.norm(g_grads)
      metrics["g_param_norm"] = optax.tree.norm(g_params)
      metrics["d_param_norm"] = optax.tree.norm(d_params)
      return new_state, metrics

    return train_step

  @staticmethod
  def headline(metrics: dict[str, float]) -> dict[str, float]:
    """The few metrics worth a place on the progress line."""
    names = {"d_loss": "d_loss", "g_loss": "g_loss", "d_real": "D(x)", "d_fake": "D(G(z))"}
    return {label: metrics[k] for k, label in names.items()}

  def sample(self, state: GANState, z: jax.Array) -> jax.Array:
    """Images in [-1, 1] from noise z, BatchNorm on its running averages."""
    return self._sample(state, z)

  def make_generate(self) -> Callable[[GANState, jax.Array, int], jax.Array]:
    """Per-replica `generate(state, key, local_batch)`: this replica's rows of a
    global batch of samples drawn from `key` (run it under pmap)."""
    generator, latent_dim = self.generator, self.latent_dim

    def generate(state: GANState, key: jax.Array, local_batch: int) -> jax.Array:
      z = global_normal(key, local_batch, (latent_dim,))
      return generator.apply(state.g.variables(), z, train=False)

    return generate

  def make_eval_step(self) -> None:
    """No held-out likelihood: GANs are scored by their samples (`imgen.evaluate`)."""
    return None

  def sample_images(
    self, state: GANState, key: jax.Array, num: int, held_out: np.ndarray
  ) -> dict[str, np.ndarray]:
    """Images for TensorBoard and PNG grids, from a noise batch fixed by `key`."""
    del held_out
    z = jax.random.normal(key, (num, self.latent_dim))
    return {"samples": np.asarray(self.sample(state, z))}
