"""The diffusion family: DDPM, EDM and flow-matching training on one U-Net, the samplers
of `imgen.methods.samplers`, classifier-free guidance, DDPM's variational bound in
bits/dim, and inpainting.

Training: a noise level per image drawn as `diffusion.objective` has it
(`imgen.methods.objectives`: DDPM's uniform levels with the epsilon or v target and
optional Min-SNR weights, EDM's log-normal sigmas with its preconditioning, or flow
matching's logit-normal times with the velocity target), and the mean square of the
network's output against the objective's target. The network is `imgen.models.unet`.

- `model.conditional`: the U-Net gets the dataset's `label`, replaced by the
  "no label" class with probability `diffusion.label_dropout` in training, so
  one network is both the conditional and the unconditional model
  (classifier-free guidance, Ho & Salimans 2022). Sampling combines them as
  out = out(x, none) + s (out(x, y) - out(x, none)) with s =
  `sample.guidance_scale`: 0 is the unconditional model, 1 the conditional
  one, and s = 1 + w is Ho & Salimans' guidance strength w.
- Samples (`sample.sampler`): `ddim`, `euler`, `heun`, `edm` (stochastic) or `dpmpp_2m`
  on the objective's denoiser D(x, sigma) over `sample.steps` levels of
  `sample.schedule`; or, for DDPM, `ddpm`: ancestral over all T levels with
  `diffusion.variance`.
- The held-out evaluation: the objective's loss and the denoising error at fixed
  sigmas; for DDPM also the bound L_T + sum_t L_t + L_0 in bits/dim: L_T and the decoder
  term L_0 exactly, the T - 1 KL terms by `eval.vb_timesteps` levels per image drawn
  uniformly (an unbiased estimate), or all of them when it is T - 1 or more.
  Conditional models are scored given the true label.
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
from imgen.methods import masks as mask_lib
from imgen.methods import objectives
from imgen.methods import samplers
from imgen.models import compute_dtype
from imgen.models import unet

SHOWN_SIGMAS = (0.2, 0.5, 1.0, 2.0, 5.0)  # The noise levels of the `denoising` grid.


def noised_levels(x0: jax.Array, noise: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(x0 repeated for each sigma of SHOWN_SIGMAS, those sigmas per row, x0 + sigma noise),
  for one network call on every level: `noise` has len(SHOWN_SIGMAS) times x0's rows."""
  sigma = jnp.repeat(jnp.asarray(SHOWN_SIGMAS, jnp.float32), x0.shape[0])
  stacked = jnp.concatenate([x0] * len(SHOWN_SIGMAS))
  return stacked, sigma, stacked + sigma.reshape((-1,) + (1,) * (x0.ndim - 1)) * noise


class DiffusionFamily(Family, Evaluates, Generates, Inpaints):
  """Builds the diffusion model's state, train/eval steps and samplers from a config."""

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    m, d = config.model, config.diffusion
    if m.name != "unet":
      raise ConfigError(f"model.name {m.name!r}; the diffusion family has 'unet'.")
    unet.check_geometry(spec.size, m.channel_mults, m.channels, m.norm_groups)
    if not 0.0 <= d.label_dropout < 1.0:
      raise ConfigError(f"diffusion.label_dropout={d.label_dropout}; it must lie in [0, 1).")
    self.objective = objectives.create(d)
    self.ddpm = self.objective.name == "ddpm"
    self.schedule = self.objective.schedule if self.ddpm else None
    if self.ddpm:
      self.schedule.log_variance(d.variance)  # Checks the name.
    samplers.check_group(config.sample, self.objective, "sample")
    if "inpaint" in config:
      samplers.check_group(config.inpaint, self.objective, "inpaint")
      if config.inpaint.resample < 1:
        raise ConfigError(f"inpaint.resample={config.inpaint.resample}; it must be >= 1.")
      w = config.inpaint.get("reconstruction", 0.0)
      if w < 0 or (w > 0 and config.inpaint.sampler == "ddpm"):
        raise ConfigError(
          f"inpaint.reconstruction={w}; it must be >= 0, and 0 with the 'ddpm' sampler."
        )
    self.num_classes = class_count(config, spec)
    if not self.conditional and config.sample.guidance_scale != 1.0:
      raise ConfigError(
        f"sample.guidance_scale={config.sample.guidance_scale} needs a conditional model "
        "(--config.model.conditional=true)."
      )
    if config.eval.vb_timesteps < 1:
      raise ConfigError(f"eval.vb_timesteps={config.eval.vb_timesteps}; it must be >= 1.")
    self.image = spec.image
    self.variance, self.label_dropout = d.variance, d.label_dropout
    self.random_flip = d.random_flip
    self.foreground_weight = d.get("foreground_weight", 0.0)
    if self.foreground_weight < 0 or (self.foreground_weight and "mask" not in spec.fields):
      raise ConfigError(
        f"diffusion.foreground_weight={self.foreground_weight} needs a value >= 0, and > 0 a "
        f"dataset with a `mask` ({config.data.name} has {sorted(spec.fields)})."
      )
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
      coordinates=m.get("coordinates", False),  # Runs from before it read as without.
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

  # --- the network as a denoiser ------------------------------------------------------------

  def network(self, params, labels, guidance: float = 1.0):
    """`out(x, time)`: the network's raw output (epsilon, v, F or velocity, as the
    objective has it) given the network condition `labels` (class labels, or a subclass's
    pytree), guided with scale `guidance` (two passes in one batch unless it is 1).
    Every objective's denoiser is affine in this output, so guiding it guides D."""
    apply = lambda x, t, y: self.model.apply({"params": params}, x, t, *([] if y is None else [y]))

    def out(x, t):
      if labels is None or guidance == 1.0:
        return apply(x, t, labels)
      both_labels = jax.tree.map(
        lambda a, b: jnp.concatenate([a, b]), labels, self.null_condition(labels)
      )
      both = apply(jnp.concatenate([x, x]), jnp.concatenate([t, t]), both_labels)
      cond, uncond = jnp.split(both, 2)
      return uncond + guidance * (cond - uncond)

    return out

  def denoiser(self, params, labels, guidance: float = 1.0, clip: bool = False):
    """`D(x, sigma)`: the network's estimate of x_0 from x = x_0 + sigma n (optionally
    clipped to [-1, 1]); see `network` for the condition and guidance."""
    out = self.network(params, labels, guidance)

    def denoise(x, sigma):
      den = self.objective.denoise(out(*self.objective.net_inputs(x, sigma)), x, sigma)
      return jnp.clip(den, -1.0, 1.0) if clip else den

    return denoise

  def eps_predictor(self, params, labels, guidance: float = 1.0):
    """DDPM's `predict(x_t, t) -> epsilon` (for the bound and the ancestral sampler)."""
    out = self.network(params, labels, guidance)
    if self.objective.prediction == "epsilon":
      return out
    return lambda x, t: diffusion.eps_from_v(self.schedule, x, t, out(x, t))

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
    obj = self.objective

    def train_step(state: SingleNetworkState, batch: dict, key: jax.Array):
      key = jax.random.fold_in(key, state.step)
      x0 = batch["image"]
      n = x0.shape[0]
      if self.random_flip:
        u = parallel.global_draw(jax.random.uniform, jax.random.fold_in(key, 4), n, ())
        x0 = jnp.where((u < 0.5)[:, None, None, None], x0[:, :, ::-1], x0)
      level = parallel.global_draw(obj.draw_level, jax.random.fold_in(key, 0), n, ())
      noise = parallel.global_normal(jax.random.fold_in(key, 1), n, x0.shape[1:])
      labels = self.train_condition(batch, jax.random.fold_in(key, 2), n)
      ex = obj.training_example(x0, level, noise)
      rngs = {"dropout": jax.random.fold_in(key, 3)}

      pixels = self.pixel_weights(batch, x0)

      def loss_fn(params):
        inputs = [ex.x, ex.time] + ([] if labels is None else [labels])
        out = self.model.apply({"params": params}, *inputs, train=True, rngs=rngs)
        per_row = jnp.mean(pixels * (out - ex.target) ** 2, axis=tuple(range(1, x0.ndim)))
        return jnp.mean(ex.weight * per_row), ()

      (loss, _), grads = parallel.value_and_mean_grad(loss_fn)(state.net.params)
      metrics = {"loss": parallel.device_mean(loss), **state.net.update_metrics(grads)}
      return state.replace(step=state.step + 1, net=state.net.apply_gradients(grads=grads)), metrics

    return train_step

  def pixel_weights(self, batch: dict, x0: jax.Array) -> jax.Array | float:
    """1, or with `diffusion.foreground_weight` w: 1 + w on the batch's mask (its nonzero
    pixels grown by one pixel, so the strokes' edges count), scaled to mean 1 per image
    so the loss keeps its scale."""
    if not self.foreground_weight:
      return 1.0
    weights = 1.0 + self.foreground_weight * mask_lib.grown(batch["mask"], 1)[..., None]
    return weights / jnp.mean(weights, axis=(1, 2, 3), keepdims=True)

  def make_eval_step(self):
    """Per-replica sums over the held-out batch of the objective's loss, the denoising
    error at fixed sigmas and, for DDPM, the bound's terms (nats)."""
    obj = self.objective

    def eval_step(state: SingleNetworkState, batch: dict, key: jax.Array):
      x0, valid = batch["image"], batch[VALID]
      n, shape = x0.shape[0], x0.shape[1:]
      labels = self.given_condition(batch)
      noise = lambda i: parallel.global_normal(jax.random.fold_in(key, i), n, shape)
      per_image = lambda v: jnp.mean(v, axis=tuple(range(1, x0.ndim)))

      level = parallel.global_draw(obj.draw_level, jax.random.fold_in(key, 1), n, ())
      ex = obj.training_example(x0, level, noise(2))
      # The loss's rows and the denoising rows at every sigma of SHOWN_SIGMAS in one network
      # call on stacked rows (one program to compile, not six).
      levels = len(SHOWN_SIGMAS)
      draws = parallel.global_normal(jax.random.fold_in(key, 100), levels * n, shape)
      stacked, sigma, x = noised_levels(x0, draws)
      net_x, net_time = obj.net_inputs(x, sigma)
      tiled = jax.tree.map(lambda v: jnp.concatenate([v] * (levels + 1)), labels)
      inputs = [jnp.concatenate([ex.x, net_x]), jnp.concatenate([ex.time, net_time])]
      inputs += [] if labels is None else [tiled]
      out = self.model.apply({"params": state.net.eval_params}, *inputs)
      loss_out, denoise_out = out[:n], out[n:]
      sums = {"loss": ex.weight * per_image((loss_out - ex.target) ** 2), "count": jnp.ones((n,))}
      errors = per_image((obj.denoise(denoise_out, x, sigma) - stacked) ** 2)
      for i, s in enumerate(SHOWN_SIGMAS):
        sums[f"x0_mse_sigma_{s:g}"] = errors[i * n : (i + 1) * n]
      if self.ddpm:
        sums.update(self._bound_terms(state, x0, labels, key, noise))
      return lax.psum(jax.tree.map(lambda x: jnp.sum(x * valid), sums), parallel.AXIS)

    return eval_step

  def _bound_terms(self, state, x0, labels, key, noise) -> dict:
    """L_T, L_0 and the estimate of the KL terms of DDPM's bound, per image (nats)."""
    s, num_steps, k_levels = self.schedule, self.schedule.num_steps, self.vb_timesteps
    exact, n = k_levels == num_steps - 1, x0.shape[0]
    predict = self.eps_predictor(state.net.eval_params, labels)
    term = lambda t, eps: diffusion.vb_term(s, predict, x0, t, eps, self.variance, clip=True)
    decoder = term(jnp.zeros((n,), jnp.int32), noise(0))

    def level(k):
      if exact:
        t = jnp.full((n,), k + 1, jnp.int32)
      else:
        draw_t = lambda r, sh: jax.random.randint(r, sh, 1, num_steps)
        t = parallel.global_draw(draw_t, jax.random.fold_in(key, 2 * k + 3), n, ())
      return term(t, noise(2 * k + 4))

    kl_terms = jnp.sum(lax.map(level, jnp.arange(k_levels)), axis=0) * ((num_steps - 1) / k_levels)
    prior = diffusion.prior_kl(s, x0)
    return {
      "prior": prior,
      "decoder": decoder,
      "diffusion": kl_terms,
      "nll": prior + decoder + kl_terms,
    }

  def summarize_eval(self, sums: dict) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    count = float(sums["count"])
    per_image = {k: float(v) / count for k, v in sums.items() if k != "count"}
    scalars = {k: v for k, v in per_image.items() if k == "loss" or k.startswith("x0_mse")}
    scalars["num_images"] = count
    if self.ddpm:
      bits = math.prod(self.image.shape) * math.log(2)
      scalars.update(
        bits_per_dim=per_image["nll"] / bits,
        nll=per_image["nll"],
        prior_bits_per_dim=per_image["prior"] / bits,
        decoder_bits_per_dim=per_image["decoder"] / bits,
        diffusion_bits_per_dim=per_image["diffusion"] / bits,
      )
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
    guide=None,
    start: tuple[jax.Array, float] | None = None,
  ) -> jax.Array:
    """This replica's n rows of a global batch drawn by the sampler of group `c` (`sample`
    or `inpaint`) from `key`, with an optional `project(x, sigma, key)` hook and an
    optional `guide(denoise) -> denoise` that edits the denoiser (not for `ddpm`). With
    `start` = (images, sigma) the chain starts from the images noised to level sigma
    (x = x_0 + sigma n) and runs the schedule's levels below it (SDEdit; not for `ddpm`)."""
    shape = self.image.shape
    normal = lambda k: parallel.global_normal(k, n, shape)
    guidance = c.guidance_scale if labels is not None else 1.0
    resample, key_x, key = (
      c.get("resample", 1),
      jax.random.fold_in(key, 0),
      jax.random.fold_in(key, 1),
    )
    if c.sampler == "ddpm" and start is not None:
      raise ConfigError("Editing (SDEdit) runs the DDIM-type samplers; sampler 'ddpm' cannot.")
    if c.sampler == "ddpm":
      x = diffusion.ddpm_sample(
        self.schedule,
        self.eps_predictor(params, labels, guidance),
        normal(key_x),
        key,
        normal,
        variance=self.variance,
        clip=c.clip,
        project=None if project is None else self._level_project(project),
        resample=resample,
      )
    else:
      sigmas = samplers.group_sigmas(c, self.objective)
      if start is None:
        x = self.objective.prior_std(float(sigmas[0])) * normal(key_x)
      else:
        images, sigma = start
        sigmas = samplers.levels_below(sigmas, sigma, "the edit's sigma")
        x = images + sigma * normal(key_x)
      churn = samplers.Churn(c.s_churn, c.s_tmin, c.s_tmax, c.s_noise)
      denoise = self.denoiser(params, labels, guidance, clip=c.clip and guide is None)
      if guide is not None:
        guided = guide(denoise)
        denoise = (lambda x, s: jnp.clip(guided(x, s), -1.0, 1.0)) if c.clip else guided
      x = samplers.sample(
        c.sampler,
        denoise,
        x,
        sigmas,
        key,
        normal,
        eta=c.eta,
        churn=churn,
        project=project,
        resample=resample,
      )
    return jnp.clip(x, -1.0, 1.0)

  def _level_project(self, project):
    """A frame `project(x, sigma, key)` as DDPM's ancestral sampler calls it: on x_t at
    level t (-1: the data), which is sqrt(abar_t) times the frame's x at sigma_t."""
    sigmas = jnp.asarray(np.append(self.objective.sigmas, 0.0), jnp.float32)  # [-1] reads 0.

    def level_project(x, t, key):
      sigma = sigmas[t]
      scale = jnp.sqrt(1.0 + sigma**2).reshape((-1,) + (1,) * (x.ndim - 1))
      return project(x * scale, sigma, key) / scale

    return level_project

  def generate(self, state: SingleNetworkState, key: jax.Array, n: int, condition=None):
    cond = self.sample_condition(condition, jax.random.fold_in(key, 2), n)
    return self.sample_chain(state.net.eval_params, key, n, cond, self.sample_config)

  def edit(
    self, state: SingleNetworkState, key: jax.Array, images: jax.Array, sigma: float, condition=None
  ) -> jax.Array:
    """SDEdit (Meng et al. 2022): this replica's `images` noised to level `sigma` and
    denoised by the `sample` group's sampler from there: a sample of the model that keeps
    what the noise leaves of the images (the layout; at small sigma their details too)."""
    n = images.shape[0]
    cond = self.sample_condition(condition, jax.random.fold_in(key, 2), n)
    params = state.net.eval_params
    return self.sample_chain(params, key, n, cond, self.sample_config, start=(images, sigma))

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
    sample's after every step; the result keeps them exactly. With
    `c.reconstruction` = w > 0 the denoiser is also pulled towards agreeing with
    the known pixels (reconstruction guidance, see `reconstruction_guide`)."""
    n = images.shape[0]
    known = known > 0.5

    def project(x, sigma, k):
      noise = parallel.global_normal(k, n, images.shape[1:])
      return jnp.where(known, images + sigma.reshape((-1, 1, 1, 1)) * noise, x)

    w = c.get("reconstruction", 0.0)
    guide = None if w == 0 else lambda d: samplers.reconstruction_guide(d, images, known, w)
    cond = self.sample_condition(condition, jax.random.fold_in(key, 2), n)
    x = self.sample_chain(state.net.eval_params, key, n, cond, c, project, guide)
    return jnp.where(known, images, x)

  # --- images --------------------------------------------------------------------------------

  def _denoising(self, params, images, labels, key):
    n, levels = images.shape[0], len(SHOWN_SIGMAS)
    # All levels in one network call on stacked rows: the same math as a call per level.
    _, sigma, x = noised_levels(images, jax.random.normal(key, (levels * n, *images.shape[1:])))
    tiled = jax.tree.map(lambda v: jnp.concatenate([v] * levels), labels)
    x0 = self.denoiser(params, tiled, clip=True)(x, sigma)
    shown = jnp.clip(x / jnp.sqrt(1.0 + sigma**2)[:, None, None, None], -1.0, 1.0)
    rows = [images]
    for i in range(levels):
      rows += [shown[i * n : (i + 1) * n], x0[i * n : (i + 1) * n]]
    return jnp.concatenate(rows)

  def show(self, state: SingleNetworkState, key, batch) -> dict[str, np.ndarray]:
    """`denoising`: 8 held-out images, then for each noise level of SHOWN_SIGMAS a row of
    the noised images (scaled by 1 / sqrt(1 + sigma^2)) and a row of the network's
    one-step x_0."""
    images = batch["image"][:8]
    labels = self.given_condition(jax.tree.map(lambda v: jnp.asarray(v[:8]), batch))
    grid = self._denoise_grid(state.net.eval_params, images, labels, key)
    return {"denoising": np.asarray(grid)}
