"""The diffusion family: DDPM training, DDPM/DDIM sampling, classifier-free
guidance, the variational bound in bits/dim, and inpainting.

Training (Ho et al. 2020, Algorithm 1): a level t ~ U{0..T-1} and noise eps
per image, x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, and the simple loss
||target - net(x_t, t)||^2 averaged over pixels, where the target is eps
(`diffusion.prediction='epsilon'`) or v = sqrt(abar) eps - sqrt(1 - abar) x_0
('v', Salimans & Ho 2022). The math lives in `imgen.methods.diffusion`, the network in
`imgen.models.unet`.

- `model.conditional`: the U-Net gets the dataset's `label`, replaced by the
  "no label" class with probability `diffusion.label_dropout` in training, so
  one network is both the conditional and the unconditional model
  (classifier-free guidance, Ho & Salimans 2022). Sampling combines them as
  eps = eps(x, none) + s (eps(x, y) - eps(x, none)) with s =
  `sample.guidance_scale`: 0 is the unconditional model, 1 the conditional
  one, and s = 1 + w is Ho & Salimans' guidance strength w.
- Samples (`sample.sampler`): `ddim` with `sample.steps` and `sample.eta`, or
  `ddpm`, ancestral over all T levels with `diffusion.variance`.
- The held-out evaluation is the bound L_T + sum_t L_t + L_0 in bits/dim: L_T
  and the decoder term L_0 exactly, the T - 1 KL terms by `eval.vb_timesteps`
  levels per image drawn uniformly (an unbiased estimate), or all of them
  when it is T - 1 or more. Conditional models are scored given the true label.
- `inpaint`: the known pixels, noised to each step's level, are put back after
  every step (`--mode=inpaint`, `imgen.modes.inpaint`).
- With `optim.ema_decay` the samples and the evaluation use the EMA weights.
"""

import math

import jax
from jax import lax
import jax.numpy as jnp
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
from imgen.families.base import Inpaints
from imgen.families.base import class_count
from imgen.families.base import reject_condition
from imgen.methods import diffusion
from imgen.models import compute_dtype
from imgen.models import unet

SAMPLERS = ("ddim", "ddpm")
SHOWN_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)  # Fractions of T in the `denoising` grid.


def check_sampler(c: ml_collections.ConfigDict, num_steps: int, path: str) -> None:
  """A ConfigError for a bad sampler group (`sample` or `inpaint`)."""
  if c.sampler not in SAMPLERS:
    raise ConfigError(f"{path}.sampler {c.sampler!r}; use one of {SAMPLERS}.")
  if c.sampler == "ddim":
    diffusion.ddim_timesteps(num_steps, c.steps)
  if c.eta < 0:
    raise ConfigError(f"{path}.eta={c.eta}; it must be >= 0.")


class DiffusionFamily(Family, Evaluates, Generates, Inpaints):
  """Builds the diffusion model's state, train/eval steps and samplers from a config."""

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    m, d = config.model, config.diffusion
    if m.name != "unet":
      raise ConfigError(f"model.name {m.name!r}; the diffusion family has 'unet'.")
    unet.check_geometry(spec.size, m.channel_mults, m.channels, m.norm_groups)
    if d.prediction not in diffusion.PREDICTIONS:
      raise ConfigError(
        f"diffusion.prediction {d.prediction!r}; use one of {diffusion.PREDICTIONS}."
      )
    if not 0.0 <= d.label_dropout < 1.0:
      raise ConfigError(f"diffusion.label_dropout={d.label_dropout}; it must lie in [0, 1).")
    self.schedule = diffusion.Schedule.create(d.schedule, d.num_steps)
    self.schedule.log_variance(d.variance)  # Checks the name.
    check_sampler(config.sample, d.num_steps, "sample")
    if "inpaint" in config:
      check_sampler(config.inpaint, d.num_steps, "inpaint")
      if config.inpaint.resample < 1:
        raise ConfigError(f"inpaint.resample={config.inpaint.resample}; it must be >= 1.")
    self.num_classes = class_count(config, spec)
    if not self.conditional and config.sample.guidance_scale != 1.0:
      raise ConfigError(
        f"sample.guidance_scale={config.sample.guidance_scale} needs a conditional model "
        "(--config.model.conditional=true)."
      )
    if config.eval.vb_timesteps < 1:
      raise ConfigError(f"eval.vb_timesteps={config.eval.vb_timesteps}; it must be >= 1.")
    self.image = spec.image
    self.prediction, self.variance, self.label_dropout = d.prediction, d.variance, d.label_dropout
    self.random_flip = d.random_flip
    self.sample_config = config.sample
    self.vb_timesteps = min(config.eval.vb_timesteps, d.num_steps - 1)
    self.model = self.make_model(config)
    self.optimizer = make_optimizer(config.optim, config.train.num_steps, "optim")
    self._denoise_grid = jax.jit(self._denoising)

  def make_model(self, config: ml_collections.ConfigDict, **overrides) -> unet.UNet:
    """The U-Net of `config.model` (with `overrides` of its fields)."""
    m = config.model
    fields = dict(
      channels=m.channels,
      channel_mults=tuple(m.channel_mults),
      num_res_blocks=m.num_res_blocks,
      attention_resolutions=tuple(m.attention_resolutions),
      dropout=m.dropout,
      num_classes=self.num_classes,
      groups=m.norm_groups,
      dtype=compute_dtype(m.dtype),
    )
    return unet.UNet(**{**fields, **overrides})

  @property
  def conditional(self) -> bool:
    """Whether the network takes a condition (class labels here)."""
    return self.num_classes is not None

  @property
  def null_label(self) -> int:
    return self.num_classes

  def init_state(self, key: jax.Array) -> SingleNetworkState:
    x, t = jnp.zeros((1, *self.image.shape)), jnp.zeros((1,), jnp.int32)
    cond = self.example_condition()
    inputs = (x, t) if cond is None else (x, t, cond)
    return SingleNetworkState.create(TrainState.create(self.model, key, inputs, self.optimizer))

  # --- conditioning: class labels here; subclasses condition on other inputs -----------------

  def example_condition(self):
    """A one-row network condition for initialisation (None: unconditional)."""
    return None if self.num_classes is None else jnp.zeros((1,), jnp.int32)

  def train_condition(self, batch: dict, key: jax.Array, n: int):
    """The network condition of a train batch, dropped (made unconditional)
    with probability `diffusion.label_dropout` per row for guidance."""
    if self.num_classes is None:
      return None
    u = parallel.global_draw(jax.random.uniform, key, n, ())
    return jnp.where(u < self.label_dropout, self.null_label, batch["label"].astype(jnp.int32))

  def given_condition(self, batch: dict):
    """The network condition of a held-out batch, as the data gives it."""
    return None if self.num_classes is None else batch["label"].astype(jnp.int32)

  def null_condition(self, cond):
    """`cond` with every row unconditional."""
    return jnp.full_like(cond, self.null_label)

  def sample_condition(self, condition: jax.Array | None, key: jax.Array, n: int):
    """The network condition of `generate`'s `condition` rows."""
    del key, n
    return self._labels(condition)

  # --- the network as a noise predictor ------------------------------------------------------

  def _to_eps(self, out: jax.Array, xt: jax.Array, t: jax.Array) -> jax.Array:
    if self.prediction == "v":
      return diffusion.eps_from_v(self.schedule, xt, t, out)
    return out

  def predictor(self, params, labels, guidance: float = 1.0):
    """`predict(x_t, t) -> eps` of the network with `params`: given the
    network condition `labels` (class labels, or a subclass's pytree), guided
    with scale `guidance` (two passes in one batch unless it is 1)."""
    apply = lambda x, t, y: self.model.apply({"params": params}, x, t, *([] if y is None else [y]))

    def predict(x, t):
      if labels is None or guidance == 1.0:
        return self._to_eps(apply(x, t, labels), x, t)
      both_labels = jax.tree.map(
        lambda a, b: jnp.concatenate([a, b]), labels, self.null_condition(labels)
      )
      both = apply(jnp.concatenate([x, x]), jnp.concatenate([t, t]), both_labels)
      cond, uncond = jnp.split(both, 2)
      return self._to_eps(uncond + guidance * (cond - uncond), x, t)

    return predict

  def _labels(self, condition: jax.Array | None) -> jax.Array | None:
    if self.num_classes is None:
      reject_condition("diffusion", condition)
      return None
    if condition is None:
      raise ConfigError(
        "This diffusion model is class-conditional: it draws images of given classes."
      )
    return condition.astype(jnp.int32)

  # --- steps ---------------------------------------------------------------------------------

  def make_train_step(self):
    s, num_steps = self.schedule, self.schedule.num_steps

    def train_step(state: SingleNetworkState, batch: dict, key: jax.Array):
      key = jax.random.fold_in(key, state.step)
      x0 = batch["image"]
      n = x0.shape[0]
      if self.random_flip:
        u = parallel.global_draw(jax.random.uniform, jax.random.fold_in(key, 4), n, ())
        x0 = jnp.where((u < 0.5)[:, None, None, None], x0[:, :, ::-1], x0)
      draw_t = lambda k, shape: jax.random.randint(k, shape, 0, num_steps)
      t = parallel.global_draw(draw_t, jax.random.fold_in(key, 0), n, ())
      noise = parallel.global_normal(jax.random.fold_in(key, 1), n, x0.shape[1:])
      labels = self.train_condition(batch, jax.random.fold_in(key, 2), n)
      xt = diffusion.q_sample(s, x0, t, noise)
      target = noise if self.prediction == "epsilon" else diffusion.v_target(s, x0, t, noise)
      rngs = {"dropout": jax.random.fold_in(key, 3)}

      def loss_fn(params):
        inputs = [xt, t] + ([] if labels is None else [labels])
        out = self.model.apply({"params": params}, *inputs, train=True, rngs=rngs)
        return jnp.mean((out - target) ** 2), ()

      (loss, _), grads = parallel.value_and_mean_grad(loss_fn)(state.net.params)
      metrics = {"loss": parallel.device_mean(loss), **state.net.update_metrics(grads)}
      return state.replace(step=state.step + 1, net=state.net.apply_gradients(grads=grads)), metrics

    return train_step

  def make_eval_step(self):
    """Per-replica sums over the held-out batch of the bound's terms (nats) and the simple loss."""
    s, num_steps, k_levels = self.schedule, self.schedule.num_steps, self.vb_timesteps
    exact = k_levels == num_steps - 1

    def eval_step(state: SingleNetworkState, batch: dict, key: jax.Array):
      x0, valid = batch["image"], batch[VALID]
      n, shape = x0.shape[0], x0.shape[1:]
      predict = self.predictor(state.net.eval_params, self.given_condition(batch))
      noise = lambda i: parallel.global_normal(jax.random.fold_in(key, i), n, shape)
      term = lambda t, eps: diffusion.vb_term(s, predict, x0, t, eps, self.variance, clip=True)

      zeros = jnp.zeros((n,), jnp.int32)
      decoder = term(zeros, noise(0))

      def level(k):
        if exact:
          t = jnp.full((n,), k + 1, jnp.int32)
        else:
          draw_t = lambda r, sh: jax.random.randint(r, sh, 1, num_steps)
          t = parallel.global_draw(draw_t, jax.random.fold_in(key, 2 * k + 3), n, ())
        return term(t, noise(2 * k + 4))

      terms = lax.map(level, jnp.arange(k_levels))  # (K, n)
      kl_terms = jnp.sum(terms, axis=0) * ((num_steps - 1) / k_levels)
      prior = diffusion.prior_kl(s, x0)

      draw_t = lambda r, sh: jax.random.randint(r, sh, 0, num_steps)
      t = parallel.global_draw(draw_t, jax.random.fold_in(key, 1), n, ())
      eps = noise(2)
      error = predict(diffusion.q_sample(s, x0, t, eps), t) - eps
      sums = {
        "prior": prior,
        "decoder": decoder,
        "diffusion": kl_terms,
        "nll": prior + decoder + kl_terms,
        "eps_mse": jnp.mean(error**2, axis=tuple(range(1, x0.ndim))),
        "count": jnp.ones((n,)),
      }
      return lax.psum(jax.tree.map(lambda x: jnp.sum(x * valid), sums), parallel.AXIS)

    return eval_step

  def summarize_eval(self, sums: dict) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    count = float(sums["count"])
    per_image = {k: float(v) / count for k, v in sums.items() if k != "count"}
    bits = math.prod(self.image.shape) * math.log(2)
    scalars = {
      "bits_per_dim": per_image["nll"] / bits,
      "nll": per_image["nll"],
      "prior_bits_per_dim": per_image["prior"] / bits,
      "decoder_bits_per_dim": per_image["decoder"] / bits,
      "diffusion_bits_per_dim": per_image["diffusion"] / bits,
      "eps_mse": per_image["eps_mse"],
      "num_images": count,
    }
    return scalars, {}

  @staticmethod
  def headline(metrics: dict[str, float]) -> dict[str, float]:
    return {"loss": metrics["loss"]}

  # --- sampling ------------------------------------------------------------------------------

  def sample_chain(
    self,
    params,
    key: jax.Array,
    n: int,
    labels: jax.Array | None,
    c: ml_collections.ConfigDict,
    project=None,
  ) -> jax.Array:
    """This replica's n rows of a global batch drawn by the sampler of group
    `c` (`sample` or `inpaint`) from `key`, with an optional `project` hook."""
    shape = self.image.shape
    normal = lambda k: parallel.global_normal(k, n, shape)
    predict = self.predictor(params, labels, c.guidance_scale if labels is not None else 1.0)
    x = normal(jax.random.fold_in(key, 0))
    options = dict(clip=c.clip, project=project, resample=c.get("resample", 1))
    key = jax.random.fold_in(key, 1)
    if c.sampler == "ddpm":
      x = diffusion.ddpm_sample(
        self.schedule, predict, x, key, normal, variance=self.variance, **options
      )
    else:
      x = diffusion.ddim_sample(
        self.schedule, predict, x, key, normal, steps=c.steps, eta=c.eta, **options
      )
    return jnp.clip(x, -1.0, 1.0)

  def generate(self, state: SingleNetworkState, key: jax.Array, n: int, condition=None):
    cond = self.sample_condition(condition, jax.random.fold_in(key, 2), n)
    return self.sample_chain(state.net.eval_params, key, n, cond, self.sample_config)

  def inpaint(
    self,
    state: SingleNetworkState,
    key: jax.Array,
    images: jax.Array,
    known: jax.Array,
    condition: jax.Array | None,
    c: ml_collections.ConfigDict,
  ) -> jax.Array:
    """Completions of this replica's `images` where `known` (same shape, 1 =
    given) is 0: the known pixels, noised to each step's level, replace the
    sample's after every step; the result keeps them exactly."""
    n, s = images.shape[0], self.schedule
    known = known > 0.5

    def project(x, t_prev, k):
      noised = diffusion.q_sample(s, images, t_prev, parallel.global_normal(k, n, images.shape[1:]))
      return jnp.where(known, noised, x)

    cond = self.sample_condition(condition, jax.random.fold_in(key, 2), n)
    x = self.sample_chain(state.net.eval_params, key, n, cond, c, project)
    return jnp.where(known, images, x)

  # --- images --------------------------------------------------------------------------------

  def _denoising(self, params, images, labels, key):
    s, n, levels = self.schedule, images.shape[0], len(SHOWN_LEVELS)
    # All levels in one network call on stacked rows: the same math as a call per level.
    t = jnp.repeat(jnp.array([int(f * (s.num_steps - 1)) for f in SHOWN_LEVELS], jnp.int32), n)
    noise = [jax.random.normal(jax.random.fold_in(key, i), images.shape) for i in range(levels)]
    stacked = jnp.concatenate([images] * levels)
    xt = diffusion.q_sample(s, stacked, t, jnp.concatenate(noise))
    tiled = jax.tree.map(lambda v: jnp.concatenate([v] * levels), labels)
    x0 = jnp.clip(diffusion.x0_from_eps(s, xt, t, self.predictor(params, tiled)(xt, t)), -1.0, 1.0)
    rows = [images]
    for i in range(levels):
      rows += [jnp.clip(xt[i * n : (i + 1) * n], -1.0, 1.0), x0[i * n : (i + 1) * n]]
    return jnp.concatenate(rows)

  def show(self, state: SingleNetworkState, key, batch) -> dict[str, np.ndarray]:
    """`denoising`: 8 held-out images, then for levels of 10%, 30%, ... 90% of
    T a row of the noised images and a row of the network's one-step x_0."""
    images = batch["image"][:8]
    labels = self.given_condition(jax.tree.map(lambda v: jnp.asarray(v[:8]), batch))
    grid = self._denoise_grid(state.net.eval_params, images, labels, key)
    return {"denoising": np.asarray(grid)}
