"""Gaussian diffusion: the forward process, its posterior, the samplers and the
variational bound, written once for any noise predictor.

Timesteps are 0-indexed: level t in 0..T-1 is the paper's x_{t+1}, and
`alphas_cumprod[t]` = prod_{s <= t} (1 - beta_s), so
q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) (Ho et al. 2020, Eq. 4).
Level -1 is the data itself (abar = 1).

- Schedules: `linear` (beta from 1e-4 to 0.02, Ho et al.) and `cosine`
  (abar(t) = cos^2(((t/T + s) / (1 + s)) pi/2), s = 0.008, betas capped at
  0.999; Nichol & Dhariwal 2021, Eq. 17).
- Reverse variances (`variance`): `small`, the posterior's beta~_t, and
  `large`, beta_t (with beta~_1 at the first level, as in the authors' code),
  Ho et al. Sec. 3.2.
- DDPM's ancestral sampler over all T levels runs its loop in one `lax.scan`.
  A `project(x, t_prev, key)` hook edits each step's result (inpainting
  re-imposes the known pixels, noised to level t_prev), and `resample` > 1
  repeats each step after re-noising its result back to its start (RePaint,
  Lugmayr et al. 2022, with jumps of one step). The other samplers, DDIM among
  them, work on any objective's denoiser: `imgen.methods.samplers`.
- `vb_terms`: the terms of the bound L = L_T + sum_{t>=1} L_t + L_0 in nats
  per image (Ho et al. Eq. 5), L_0 with the discretised Gaussian decoder of
  Eq. 13 over the 256 levels of 8-bit images.
"""

from collections.abc import Callable
import dataclasses
import math

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from imgen.core.errors import ConfigError

SCHEDULES = ("linear", "cosine")
VARIANCES = ("small", "large")
PREDICTIONS = ("epsilon", "v")

Predictor = Callable[[jax.Array, jax.Array], jax.Array]  # (x_t, t rows) -> epsilon.
Normal = Callable[[jax.Array], jax.Array]  # key -> N(0, I) noise of x's shape.


def linear_betas(num_steps: int, start: float = 1e-4, end: float = 0.02) -> np.ndarray:
  return np.linspace(start, end, num_steps, dtype=np.float64)


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
  abar = lambda t: np.cos((t / num_steps + s) / (1 + s) * math.pi / 2) ** 2
  t = np.arange(num_steps, dtype=np.float64)
  return np.minimum(1.0 - abar(t + 1) / abar(t), max_beta)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The constants of a forward process with `betas`, in float64 (used as float32)."""

  betas: np.ndarray

  @classmethod
  def create(cls, name: str, num_steps: int) -> "Schedule":
    if name not in SCHEDULES:
      raise ConfigError(f"diffusion.schedule {name!r}; use one of {SCHEDULES}.")
    if num_steps < 2:
      raise ConfigError(f"diffusion.num_steps={num_steps}; it needs at least 2 levels.")
    return cls(linear_betas(num_steps) if name == "linear" else cosine_betas(num_steps))

  @property
  def num_steps(self) -> int:
    return len(self.betas)

  @property
  def alphas_cumprod(self) -> np.ndarray:
    return np.cumprod(1.0 - self.betas)

  @property
  def alphas_cumprod_prev(self) -> np.ndarray:
    return np.append(1.0, self.alphas_cumprod[:-1])

  @property
  def posterior_variance(self) -> np.ndarray:
    """beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) (Ho et al. Eq. 7); 0 at t = 0."""
    return self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

  def log_variance(self, kind: str) -> np.ndarray:
    """log sigma_t^2 of the reverse steps; level 0 takes beta~ of level 1 (never 0)."""
    if kind not in VARIANCES:
      raise ConfigError(f"diffusion.variance {kind!r}; use one of {VARIANCES}.")
    post = self.posterior_variance
    var = np.append(post[1], (post if kind == "small" else self.betas)[1:])
    return np.log(var)


def _at(values: np.ndarray, t: jax.Array, like: jax.Array) -> jax.Array:
  """values[t] per row, shaped to broadcast against `like`; t = -1 means the data (abar 1)."""
  table = jnp.asarray(values, jnp.float32)
  return table[t].reshape((-1,) + (1,) * (like.ndim - 1))


def _abar(s: Schedule, t: jax.Array, like: jax.Array) -> jax.Array:
  """abar_t per row, with abar_{-1} = 1."""
  return _at(np.append(s.alphas_cumprod, 1.0), t, like)  # Index -1 reads the appended 1.


def _signal_noise(s: Schedule, t: jax.Array, like: jax.Array) -> tuple[jax.Array, jax.Array]:
  """sqrt(abar_t), sqrt(1 - abar_t) per row (1 and 0 at t = -1), from float64 tables:
  1 - abar in float32 would lose most digits where abar is near 1."""
  abar = np.append(s.alphas_cumprod, 1.0)
  return _at(np.sqrt(abar), t, like), _at(np.sqrt(1.0 - abar), t, like)


def q_sample(s: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
  signal, sigma = _signal_noise(s, t, x0)
  return signal * x0 + sigma * noise


def q_posterior(s: Schedule, x0: jax.Array, xt: jax.Array, t: jax.Array):
  """Mean and log variance of q(x_{t-1} | x_t, x_0) (Ho et al. Eqs. 6-7); t >= 1."""
  abar, abar_prev, beta = s.alphas_cumprod, s.alphas_cumprod_prev, s.betas
  coef_x0 = _at(np.sqrt(abar_prev) * beta / (1.0 - abar), t, xt)
  coef_xt = _at(np.sqrt(1.0 - beta) * (1.0 - abar_prev) / (1.0 - abar), t, xt)
  return coef_x0 * x0 + coef_xt * xt, _at(s.log_variance("small"), t, xt)


def x0_from_eps(s: Schedule, xt: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
  signal, sigma = _signal_noise(s, t, xt)
  return (xt - sigma * eps) / signal


def eps_from_x0(s: Schedule, xt: jax.Array, t: jax.Array, x0: jax.Array) -> jax.Array:
  signal, sigma = _signal_noise(s, t, xt)
  return (xt - signal * x0) / sigma


def v_target(s: Schedule, x0: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
  """v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho 2022, Sec. 4)."""
  signal, sigma = _signal_noise(s, t, x0)
  return signal * eps - sigma * x0


def eps_from_v(s: Schedule, xt: jax.Array, t: jax.Array, v: jax.Array) -> jax.Array:
  signal, sigma = _signal_noise(s, t, xt)
  return signal * v + sigma * xt


def _denoised(s: Schedule, predict: Predictor, x: jax.Array, t: jax.Array, clip: bool):
  """(predicted x_0, the noise consistent with it) at level t."""
  eps = predict(x, t)
  if not clip:
    return x0_from_eps(s, x, t, eps), eps
  x0 = jnp.clip(x0_from_eps(s, x, t, eps), -1.0, 1.0)
  return x0, eps_from_x0(s, x, t, x0)


def p_mean(s: Schedule, predict: Predictor, x: jax.Array, t: jax.Array, clip: bool) -> jax.Array:
  """The reverse step's mean: the posterior mean at the predicted x_0."""
  x0, _ = _denoised(s, predict, x, t, clip)
  return q_posterior(s, x0, x, t)[0]


def ddim_timesteps(num_steps: int, sampling_steps: int) -> np.ndarray:
  """`sampling_steps` levels, evenly spaced from T-1 down to 0 (all of them when equal)."""
  if not 1 <= sampling_steps <= num_steps:
    raise ConfigError(f"sample.steps={sampling_steps}; use 1..{num_steps} (diffusion.num_steps).")
  return np.unique(np.round(np.linspace(0, num_steps - 1, sampling_steps)).astype(np.int32))[::-1]


def _chain(
  step: Callable,
  x: jax.Array,
  ts: np.ndarray,
  key: jax.Array,
  project: Callable | None,
  resample: int,
  renoise: Callable,
) -> jax.Array:
  """Runs `step(x, t, t_prev, key)` over levels `ts` (descending; t_prev = -1
  after the last) in one scan, with the `project` hook and RePaint's resampling."""
  prev = np.append(ts[1:], -1).astype(np.int32)
  n = x.shape[0]

  def once(x, t, t_prev, key):
    y = step(x, t, t_prev, jax.random.fold_in(key, 0))
    return y if project is None else project(y, t_prev, jax.random.fold_in(key, 1))

  def body(x, inputs):
    i, t, t_prev = inputs
    key_i = jax.random.fold_in(key, i)
    tt, tp = jnp.full((n,), t), jnp.full((n,), t_prev)
    if resample == 1:
      return once(x, tt, tp, key_i), None

    def repeat(j, carry):
      x, _ = carry
      y = once(x, tt, tp, jax.random.fold_in(key_i, 2 * j))
      back = renoise(y, tp, tt, jax.random.fold_in(key_i, 2 * j + 1))
      return back, y

    _, y = lax.fori_loop(0, resample, repeat, (x, x))
    return y, None

  steps = (jnp.arange(len(ts)), jnp.asarray(ts), jnp.asarray(prev))
  return lax.scan(body, x, steps)[0]


def _renoise(s: Schedule, normal: Normal):
  """x at level t_prev -> a draw of q(x_t | x_{t_prev}): the forward process between them."""

  def renoise(y, t_prev, t, key):
    ratio = _abar(s, t, y) / _abar(s, t_prev, y)
    return jnp.sqrt(ratio) * y + jnp.sqrt(1.0 - ratio) * normal(key)

  return renoise


def ddpm_sample(
  s: Schedule,
  predict: Predictor,
  x: jax.Array,
  key: jax.Array,
  normal: Normal,
  *,
  variance: str = "small",
  clip: bool = True,
  project: Callable | None = None,
  resample: int = 1,
) -> jax.Array:
  """Ancestral sampling from x_{T-1} = `x` over all T levels (Ho et al. Algorithm 2)."""
  log_var = s.log_variance(variance)

  def step(x, t, t_prev, key):
    mean = p_mean(s, predict, x, t, clip)
    last = (t_prev < 0).reshape((-1,) + (1,) * (x.ndim - 1))  # No noise into x_0.
    return mean + jnp.where(last, 0.0, jnp.exp(0.5 * _at(log_var, t, x))) * normal(key)

  ts = np.arange(s.num_steps, dtype=np.int32)[::-1]
  return _chain(step, x, ts, key, project, resample, _renoise(s, normal))


# --- the variational bound ------------------------------------------------------------------


def normal_kl(mean1, log_var1, mean2, log_var2) -> jax.Array:
  """KL(N(mean1, e^log_var1) || N(mean2, e^log_var2)), elementwise."""
  return 0.5 * (
    log_var2
    - log_var1
    + jnp.exp(log_var1 - log_var2)
    + (mean1 - mean2) ** 2 * jnp.exp(-log_var2)
    - 1.0
  )


def _std_normal_cdf(x: jax.Array) -> jax.Array:
  return 0.5 * (1.0 + lax.erf(x / math.sqrt(2.0)))


def discretized_gaussian_nll(x0: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """-log of the mass N(mean, e^log_var) puts on x0's bin of the 256 levels of [-1, 1]
  (bins 2/255 wide, the end bins taking the tails; Ho et al. Eq. 13), elementwise."""
  half, inv_std = 1.0 / 255.0, jnp.exp(-0.5 * log_var)
  upper = jnp.where(x0 > 1.0 - half, 1.0, _std_normal_cdf((x0 + half - mean) * inv_std))
  lower = jnp.where(x0 < -1.0 + half, 0.0, _std_normal_cdf((x0 - half - mean) * inv_std))
  return -jnp.log(jnp.maximum(upper - lower, 1e-12))


def _per_image(x: jax.Array) -> jax.Array:
  return jnp.sum(x, axis=tuple(range(1, x.ndim)))


def prior_kl(s: Schedule, x0: jax.Array) -> jax.Array:
  """L_T = KL(q(x_{T-1} | x_0) || N(0, I)) per image, in nats."""
  t = jnp.full((x0.shape[0],), s.num_steps - 1)
  signal, sigma = _signal_noise(s, t, x0)
  return _per_image(normal_kl(signal * x0, 2.0 * jnp.log(sigma), 0.0, 0.0))


def vb_term(
  s: Schedule,
  predict: Predictor,
  x0: jax.Array,
  t: jax.Array,
  noise: jax.Array,
  variance: str,
  clip: bool,
) -> jax.Array:
  """L_t per image in nats at x_t = q_sample(x_0, t, noise): the decoder's NLL
  where t = 0, else KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))."""
  xt = q_sample(s, x0, t, noise)
  model_mean = p_mean(s, predict, xt, t, clip)
  model_log_var = _at(s.log_variance(variance), t, xt)
  true_mean, true_log_var = q_posterior(s, x0, xt, jnp.maximum(t, 1))
  kl = _per_image(normal_kl(true_mean, true_log_var, model_mean, model_log_var))
  decoder = _per_image(discretized_gaussian_nll(x0, model_mean, model_log_var))
  return jnp.where(t == 0, decoder, kl)
