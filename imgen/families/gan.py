"""The GAN family: non-saturating losses, the pure train step, samples.

One train step is the DCGAN paper's alternating update (as in the PyTorch
DCGAN tutorial): the generator makes one fake batch; the discriminator takes
a step on real (label 1) and detached fake (label 0) images, each batch
through D on its own so BatchNorm sees them apart; then the generator takes a
step on the non-saturating loss -log D(G(z)) through the updated D, reusing
the same fake batch (`jax.vjp` keeps G's forward pass, so G runs forward once
per step, as in PyTorch). G and D have their own optimizers (`optim.g`,
`optim.d`); with `optim.g.ema_decay` the samples come from G's EMA weights
(with the BatchNorm running statistics of the trained G).
"""

import flax
import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from imgen import parallel
from imgen.data.spec import DataSpec
from imgen.errors import ConfigError
from imgen.families.base import Family
from imgen.families.base import Generates
from imgen.families.base import reject_condition
from imgen.models import compute_dtype
from imgen.models import dcgan
from imgen.models.layers import IMPLEMENTATIONS as UPSAMPLE_IMPLEMENTATIONS
from imgen.optim import make_optimizer
from imgen.train_state import TrainState

NETWORKS = {"dcgan": (dcgan.Generator, dcgan.Discriminator)}  # model.name -> (G, D)


@flax.struct.dataclass
class GANState:
  step: jax.Array
  g: TrainState
  d: TrainState


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """BCE of D with real -> 1 and fake -> 0: -log D(x) - log(1 - D(G(z))).

  softplus(-l) = -log(sigmoid(l)) and softplus(l) = -log(1 - sigmoid(l)),
  written so they stay finite for any logit.
  """
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def generator_loss(fake_logits: jax.Array) -> jax.Array:
  """Non-saturating generator loss: -log D(G(z))."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


class GANFamily(Family, Generates):
  """Builds the GAN's state, train step and samples from a config."""

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    m = config.model
    if m.name not in NETWORKS:
      raise ConfigError(f"model.name {m.name!r} is not a GAN; known: {sorted(NETWORKS)}.")
    if m.upsample not in UPSAMPLE_IMPLEMENTATIONS:
      raise ConfigError(
        f"model.upsample {m.upsample!r} is unknown; known: {sorted(UPSAMPLE_IMPLEMENTATIONS)}."
      )
    dcgan.geometry(spec.size)
    make_g, make_d = NETWORKS[m.name]
    image = spec.image
    common = dict(image_size=image.size, axis_name=parallel.AXIS, dtype=compute_dtype(m.dtype))
    self.generator = make_g(**common, width=m.g_width, channels=image.channels, upsample=m.upsample)
    self.discriminator = make_d(**common, width=m.d_width, downsample=m.upsample)
    self.latent_dim = m.latent_dim
    self.image = image
    steps = config.train.num_steps
    self.g_optimizer = make_optimizer(config.optim.g, steps, "optim.g")
    self.d_optimizer = make_optimizer(config.optim.d, steps, "optim.d")

  def init_state(self, key: jax.Array) -> GANState:
    g_key, d_key = jax.random.split(key)
    z = jnp.zeros((1, self.latent_dim))
    x = jnp.zeros((1, *self.image.shape))
    return GANState(
      step=jnp.zeros((), jnp.int32),
      g=TrainState.create(self.generator, g_key, z, self.g_optimizer),
      d=TrainState.create(self.discriminator, d_key, x, self.d_optimizer),
    )

  def make_train_step(self):
    generator, discriminator, latent_dim = self.generator, self.discriminator, self.latent_dim

    def train_step(state: GANState, batch: dict, key: jax.Array):
      real = batch["image"]
      z = parallel.global_normal(jax.random.fold_in(key, state.step), real.shape[0], (latent_dim,))

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

      (d_loss, (d_stats, real_logits, fake_logits)), d_grads = parallel.value_and_mean_grad(
        d_loss_fn
      )(state.d.params)
      d = state.d.apply_gradients(grads=d_grads)

      def g_loss_fn(fake):
        logits, upd = discriminator.apply(
          {"params": d.params, "batch_stats": d_stats}, fake, train=True, mutable=["batch_stats"]
        )
        return generator_loss(logits), (upd["batch_stats"], logits)

      (g_loss, (d_stats, gen_logits)), fake_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
      (g_grads,) = g_vjp(fake_grad)
      g_grads = lax.pmean(g_grads, parallel.AXIS)  # G's gradients come through the vjp.
      g = state.g.apply_gradients(grads=g_grads, batch_stats=g_batch_stats)

      metrics = {
        "d_loss": d_loss,
        "g_loss": g_loss,
        "d_real": jnp.mean(nn.sigmoid(real_logits)),
        "d_fake": jnp.mean(nn.sigmoid(fake_logits)),
        "d_fake_after": jnp.mean(nn.sigmoid(gen_logits)),
      }
      metrics = lax.pmean(metrics, parallel.AXIS)
      metrics.update(state.d.update_metrics(d_grads, "d_"))
      metrics.update(state.g.update_metrics(g_grads, "g_"))
      metrics["g_param_norm"] = optax.tree.norm(g.params)
      metrics["d_param_norm"] = optax.tree.norm(d.params)
      return GANState(state.step + 1, g, d.replace(batch_stats=d_stats)), metrics

    return train_step

  @staticmethod
  def headline(metrics: dict[str, float]) -> dict[str, float]:
    names = {"d_loss": "d_loss", "g_loss": "g_loss", "d_real": "D(x)", "d_fake": "D(G(z))"}
    return {label: metrics[k] for k, label in names.items()}

  def generate(self, state: GANState, key: jax.Array, n: int, condition=None) -> jax.Array:
    """G's images (EMA weights when on) of this replica's rows of a global noise
    batch, BatchNorm on its running averages."""
    reject_condition("gan", condition)
    z = parallel.global_normal(key, n, (self.latent_dim,))
    return self.generator.apply(state.g.variables(), z, train=False)

  def show(self, state, key, batch) -> dict[str, np.ndarray]:
    """Nothing beyond the samples, which the trainer draws."""
    del state, key, batch
    return {}
