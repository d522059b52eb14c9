"""The GAN family: losses, critic steps, conditioning, augmentation, samples.

One train step is one generator update after `objective.n_dis` discriminator
updates, each on its own real batch (the trainer hands the step `n_dis`
batches, so data batch `s` stays a function of (seed, s) and resume is exact)
and its own noise. The generator's update reuses the fake batch of the last
discriminator update (`jax.vjp` keeps G's forward pass) through the updated D.
With `n_dis=1` and the non-saturating loss this is the DCGAN paper's
alternating update, as in the PyTorch DCGAN tutorial; real and fake images go
through D separately, so BatchNorm sees them apart.

- Losses (`objective.loss`): `non_saturating` (Goodfellow et al. 2014),
  `hinge` (Lim & Ye 2017; SNGAN's Eqs. 16-17), `wgan_gp` (Gulrajani et al.
  2017: the Wasserstein critic with `gp_weight` times (||grad D(x^)|| - 1)^2
  on random interpolates x^ of real and fake images); any of them with an R1
  penalty (Mescheder et al. 2018) of `r1_gamma / 2 * ||grad D(x)||^2` on real
  images, estimated on every `r1_subsample`-th real image of the batch (the
  same expectation at a fraction of the cost). Gradient penalties need each
  image's logit to depend on that image alone: no BatchNorm in D.
- Networks (`model.name`): `dcgan` (`imgen.models.dcgan`), `resnet`, the
  ResNet of SNGAN and WGAN-GP (`imgen.models.resnet_gan`), and `sgan`, the
  fully convolutional texture GAN (`imgen.models.sgan`), whose D scores a map
  of positions; `model.spectral_norm` normalises D's layers (dcgan, resnet).
- `model.conditional`: G with conditional BatchNorm and a projection D, on the
  dataset's `label`; fakes are drawn for uniformly random classes.
- `objective.diffaugment`: DiffAugment (`imgen.methods.augment`) on every image D sees.
- G and D have their own optimizers (`optim.g`, `optim.d`); with
  `optim.g.ema_decay` samples and metrics come from G's EMA weights. Those
  weights never ran in training, so the running BatchNorm statistics of the
  trained G do not fit them: G's BatchNorms use statistics of the EMA weights
  on a fixed batch of `STANDING_SAMPLES` noise vectors instead (BigGAN's
  "standing statistics", Brock et al. 2019, Sec. 3.1 and Appendix C.1).
"""

import flax
import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from imgen.core import parallel
from imgen.core.errors import ConfigError
from imgen.core.optim import make_optimizer
from imgen.core.train_state import TrainState
from imgen.data.spec import DataSpec
from imgen.families.base import Family
from imgen.families.base import Generates
from imgen.families.base import class_count
from imgen.families.base import reject_condition
from imgen.methods import augment
from imgen.methods.gan_losses import LOSSES
from imgen.methods.gan_losses import gradient_penalty
from imgen.methods.gan_losses import r1_penalty
from imgen.methods.gan_losses import top_k_count
from imgen.methods.gan_losses import top_k_weights
from imgen.models import compute_dtype
from imgen.models.gan_networks import NETWORKS


@flax.struct.dataclass
class GANState:
  step: jax.Array
  g: TrainState
  d: TrainState


_AUX = 1 << 20  # fold_in(step key, _AUX): the stream of every draw but the first noise batch.
STANDING_SAMPLES = 1024  # Samples whose BatchNorm statistics the EMA generator uses.


class GANFamily(Family, Generates):
  """Builds the GAN's state, train step and samples from a config."""

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    m, o = config.model, config.objective
    if m.name not in NETWORKS:
      raise ConfigError(f"model.name {m.name!r} is not a GAN; known: {sorted(NETWORKS)}.")
    if o.loss not in LOSSES:
      raise ConfigError(f"objective.loss {o.loss!r} is unknown; known: {sorted(LOSSES)}.")
    if o.n_dis < 1:
      raise ConfigError(f"objective.n_dis={o.n_dis}; it must be a positive integer.")
    if o.gp_weight < 0 or o.r1_gamma < 0:
      raise ConfigError("objective.gp_weight and objective.r1_gamma cannot be negative.")
    if o.r1_subsample < 1:
      raise ConfigError(f"objective.r1_subsample={o.r1_subsample}; it must be a positive integer.")
    per_device = config.train.batch_size // jax.device_count()
    if o.r1_gamma > 0 and per_device % o.r1_subsample:  # Else the rows would differ with devices.
      raise ConfigError(
        f"objective.r1_subsample={o.r1_subsample} must divide the batch of each device "
        f"({per_device})."
      )
    if not (0 < o.topk_min <= 1 and 0 < o.topk_decay <= 1 and o.topk_every >= 1):
      raise ConfigError(
        f"objective.topk_min={o.topk_min}, topk_decay={o.topk_decay}, topk_every="
        f"{o.topk_every}: the fraction and decay must lie in (0, 1], the interval be >= 1 step."
      )
    self.num_classes = class_count(config, spec)
    g, d, d_batch_norm, self.latent_dim = NETWORKS[m.name](
      config, spec.image, self.num_classes, compute_dtype(m.dtype)
    )
    penalties = [n for n, on in (("wgan_gp", o.loss == "wgan_gp"), ("R1", o.r1_gamma > 0)) if on]
    if penalties and d_batch_norm:
      raise ConfigError(
        f"The {' and '.join(penalties)} gradient penalty needs each image's logit to depend on "
        "that image alone, and BatchNorm in D mixes the batch: set --config.model.d_norm=layer "
        "(or none)."
      )
    self.generator, self.discriminator = g, d
    self._standing_generator = g.clone(norm_momentum=0.0)  # Keeps one batch's statistics.
    self.seed = config.seed
    self.image = spec.image
    self.objective = o
    self.policies = augment.parse(o.diffaugment)
    self.batches_per_step = o.n_dis
    steps = config.train.num_steps
    self.g_optimizer = make_optimizer(config.optim.g, steps, "optim.g")
    self.d_optimizer = make_optimizer(config.optim.d, steps, "optim.d")

  def init_state(self, key: jax.Array) -> GANState:
    g_key, d_key = jax.random.split(key)
    labels = () if self.num_classes is None else (jnp.zeros((1,), jnp.int32),)
    z = jnp.zeros((1, self.latent_dim))
    x = jnp.zeros((1, *self.image.shape))
    return GANState(
      step=jnp.zeros((), jnp.int32),
      g=TrainState.create(self.generator, g_key, (z, *labels), self.g_optimizer),
      d=TrainState.create(self.discriminator, d_key, (x, *labels), self.d_optimizer),
    )

  def make_train_step(self):
    generator, discriminator, latent_dim = self.generator, self.discriminator, self.latent_dim
    o, num_classes, policies = self.objective, self.num_classes, self.policies
    d_loss_of, g_loss_of = LOSSES[o.loss]
    n_dis = o.n_dis

    def generate(g_params, g_stats, z, labels):
      fake, updates = generator.apply(
        {"params": g_params, "batch_stats": g_stats}, z, labels, train=True, mutable=["batch_stats"]
      )
      return fake, updates["batch_stats"]

    def discriminate(d_params, d_stats, x, labels):
      logits, updates = discriminator.apply(
        {"params": d_params, "batch_stats": d_stats}, x, labels, train=True, mutable=["batch_stats"]
      )
      return logits, updates.get("batch_stats", {})

    def train_step(state: GANState, batch: dict, key: jax.Array):
      step_key = jax.random.fold_in(key, state.step)
      aux = jax.random.fold_in(step_key, _AUX)
      reals = batch["image"] if n_dis > 1 else batch["image"][None]
      real_labels = [None] * n_dis
      if num_classes is not None:
        real_labels = batch["label"] if n_dis > 1 else batch["label"][None]
      b = reals.shape[1]
      if o.r1_gamma > 0 and b % o.r1_subsample:  # Else the rows would differ with the devices.
        raise ConfigError(
          f"objective.r1_subsample={o.r1_subsample} must divide the batch of each device ({b})."
        )
      g_stats, d, totals = state.g.batch_stats, state.d, {}

      for j in range(n_dis):
        keys = jax.random.fold_in(aux, j)
        z = parallel.global_normal(
          step_key if j == 0 else jax.random.fold_in(step_key, j), b, (latent_dim,)
        )
        fake_labels = None
        if num_classes is not None:
          draw = lambda rng, shape: jax.random.randint(rng, shape, 0, num_classes)
          fake_labels = parallel.global_draw(draw, jax.random.fold_in(keys, 0), b, ())
        forward = lambda p, z=z, y=fake_labels, s=g_stats: generate(p, s, z, y)
        if j == n_dis - 1:  # The generator's update reuses this fake batch.
          fake, g_vjp, g_stats = jax.vjp(forward, state.g.params, has_aux=True)
        else:
          fake, g_stats = forward(state.g.params)
        real, y_real = reals[j], real_labels[j]

        def d_loss_fn(
          d_params, d=d, real=real, y_real=y_real, fake=fake, y_fake=fake_labels, keys=keys
        ):
          real_in = augment.diff_augment(real, jax.random.fold_in(keys, 1), policies)
          fake_in = augment.diff_augment(
            lax.stop_gradient(fake), jax.random.fold_in(keys, 2), policies
          )
          real_logits, stats = discriminate(d_params, d.batch_stats, real_in, y_real)
          fake_logits, stats = discriminate(d_params, stats, fake_in, y_fake)
          loss = d_loss_of(real_logits, fake_logits)
          logits_of = lambda x, y=y_real: discriminate(d_params, stats, x, y)[0]
          extras = {}
          if o.loss == "wgan_gp":
            uniform = lambda rng, shape: jax.random.uniform(rng, shape)
            eps = parallel.global_draw(uniform, jax.random.fold_in(keys, 3), b, (1, 1, 1))
            extras["gp"] = gradient_penalty(logits_of, eps * real_in + (1.0 - eps) * fake_in)
            loss = loss + o.gp_weight * extras["gp"]
          if o.r1_gamma > 0:
            every = slice(None, None, o.r1_subsample)
            y = None if y_real is None else y_real[every]
            extras["r1"] = r1_penalty(lambda x: logits_of(x, y), real_in[every])
            loss = loss + 0.5 * o.r1_gamma * extras["r1"]
          return loss, (stats, real_logits, fake_logits, extras)

        (d_loss, (d_stats, real_logits, fake_logits, extras)), d_grads = (
          parallel.value_and_mean_grad(d_loss_fn)(d.params)
        )
        d = d.apply_gradients(grads=d_grads, batch_stats=d_stats)
        step_metrics = {"d_loss": d_loss, "real_logit": jnp.mean(real_logits), **extras}
        step_metrics["fake_logit"] = jnp.mean(fake_logits)
        if o.loss == "non_saturating":
          step_metrics["d_real"] = jnp.mean(nn.sigmoid(real_logits))
          step_metrics["d_fake"] = jnp.mean(nn.sigmoid(fake_logits))
        for k, v in step_metrics.items():
          totals[k] = totals.get(k, 0.0) + v / n_dis

      g_key = jax.random.fold_in(jax.random.fold_in(aux, n_dis), 2)

      k = None if o.topk_min == 1 else top_k_count(state.step, b * lax.psum(1, parallel.AXIS), o)

      def g_loss_fn(fake):
        fake_in = augment.diff_augment(fake, g_key, policies)
        logits, stats = discriminate(d.params, d.batch_stats, fake_in, fake_labels)
        weights = None if k is None else top_k_weights(logits, k)
        return g_loss_of(logits, weights), (stats, logits)

      (g_loss, (d_stats, gen_logits)), fake_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
      (g_grads,) = g_vjp(fake_grad)
      g_grads = parallel.device_mean(g_grads)  # G's gradients come through the vjp.
      g = state.g.apply_gradients(grads=g_grads, batch_stats=g_stats)

      metrics = {**totals, "g_loss": g_loss}
      if k is not None:
        metrics["topk"] = k.astype(jnp.float32)
      if o.loss == "non_saturating":
        metrics["d_fake_after"] = jnp.mean(nn.sigmoid(gen_logits))
      elif o.loss == "wgan_gp":  # The critic's estimate of the Wasserstein-1 distance.
        metrics["wasserstein"] = totals["real_logit"] - totals["fake_logit"]
      metrics = parallel.device_mean(metrics)
      metrics.update(state.d.update_metrics(d_grads, "d_"))
      metrics.update(state.g.update_metrics(g_grads, "g_"))
      metrics["g_param_norm"] = optax.tree.norm(g.params)
      metrics["d_param_norm"] = optax.tree.norm(d.params)
      return GANState(state.step + 1, g, d.replace(batch_stats=d_stats)), metrics

    return train_step

  def headline(self, metrics: dict[str, float]) -> dict[str, float]:
    names = {"d_loss": "d_loss", "g_loss": "g_loss"}
    if self.objective.loss == "non_saturating":
      names.update(d_real="D(x)", d_fake="D(G(z))")
    else:
      names.update(real_logit="D(x)", fake_logit="D(G(z))")
    names.update(gp="gp", r1="r1")
    return {label: metrics[k] for k, label in names.items() if k in metrics}

  def generate(self, state: GANState, key: jax.Array, n: int, condition=None) -> jax.Array:
    """G's images of this replica's rows of a global noise batch: the EMA
    weights with their standing statistics when the EMA is on, else the
    trained weights with BatchNorm's running averages. `condition`: their
    classes."""
    if self.num_classes is None:
      reject_condition("gan", condition)
    elif condition is None:
      raise ConfigError("This GAN is class-conditional: it draws images of given classes.")
    z = parallel.global_normal(key, n, (self.latent_dim,))
    labels = None if condition is None else condition.astype(jnp.int32)
    variables = state.g.variables()
    if state.g.optimizer.uses_ema and variables["batch_stats"]:
      stats = self.standing_statistics(variables["params"], variables["batch_stats"], n)
      variables = {**variables, "batch_stats": stats}
    return self.generator.apply(variables, z, labels, train=False)

  def standing_batch(self, n: int) -> tuple[jax.Array, jax.Array | None]:
    """This replica's rows of the fixed batch of about `STANDING_SAMPLES`
    noise vectors (and uniform classes) behind the standing statistics: for a
    global batch of n rows per replica, the same rows on any number of devices."""
    rows = n * -(-STANDING_SAMPLES // (n * lax.psum(1, parallel.AXIS)))
    key = jax.random.fold_in(jax.random.key(self.seed), STANDING_SAMPLES)
    z = parallel.global_normal(key, rows, (self.latent_dim,))
    labels = None
    if self.num_classes is not None:
      draw = lambda rng, shape: jax.random.randint(rng, shape, 0, self.num_classes)
      labels = parallel.global_draw(draw, jax.random.fold_in(key, 1), rows, ())
    return z, labels

  def standing_statistics(self, params, batch_stats, n: int):
    """G's BatchNorm statistics with `params` over the standing batch."""
    z, labels = self.standing_batch(n)
    variables = {"params": params, "batch_stats": batch_stats}
    _, updates = self._standing_generator.apply(
      variables, z, labels, train=True, mutable=["batch_stats"]
    )
    return updates["batch_stats"]

  def show(self, state, key, batch) -> dict[str, np.ndarray]:
    """Nothing beyond the samples, which the trainer draws."""
    del state, key, batch
    return {}
