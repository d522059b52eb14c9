"""What a diffusion network is trained to predict, and how its output becomes a denoiser.

Every objective here reads the same noisy images in one frame, the variance-exploding one
of Karras et al. 2022 (EDM): x = x_0 + sigma n with n ~ N(0, I), and turns its network's
output into the denoiser D(x, sigma) ~ E[x_0 | x], so one set of samplers
(`imgen.methods.samplers`) serves all of them. Each objective scales x for its network
(`net_inputs`) and draws its own training levels (`training_example`):

- `DDPM` (Ho et al. 2020): the discrete variance-preserving process of
  `imgen.methods.diffusion`, x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) n, which is
  sqrt(abar_t) times the frame's x at sigma_t = sqrt((1 - abar_t) / abar_t); the network
  reads x_t and the level index t and predicts epsilon or v. `min_snr_gamma` > 0 weights
  the loss by min(SNR, gamma) / SNR (epsilon) or min(SNR, gamma) / (SNR + 1) (v), with
  SNR = abar / (1 - abar) = 1 / sigma^2 (Hang et al. 2023, "Min-SNR", Sec. 3.4).
- `EDM` (Karras et al. 2022, Table 1): D = c_skip x + c_out F(c_in x, c_noise) with
  c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
  c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4 (sd = `sigma_data`); training
  sigmas log-normal, ln sigma ~ N(P_mean, P_std^2); the loss weight
  lambda = (sigma^2 + sd^2) / (sigma sd)^2 times c_out^2 is 1, so the loss is the plain
  mean square of F against its target (x_0 - c_skip x) / c_out.
- `Flow` (flow matching with the straight path: Lipman et al. 2023, Liu et al. 2023):
  x_t = (1 - t) x_0 + t n, the network predicts the velocity n - x_0; t drawn
  logit-normal, logit(t) ~ N(m, s^2) (Esser et al. 2024, Sec. 3.1). In the frame,
  sigma = t / (1 - t) and x_t = x / (1 + sigma); the network reads `time_scale` * t.
"""

from collections.abc import Callable
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from imgen.core.errors import ConfigError
from imgen.methods import diffusion

NAMES = ("ddpm", "edm", "flow")

Network = Callable[[jax.Array, jax.Array], jax.Array]  # (scaled x, network time) -> output.


def _rows(v: jax.Array, like: jax.Array) -> jax.Array:
  """A per-row (N,) value shaped to broadcast against `like`."""
  return jnp.reshape(v, (-1,) + (1,) * (like.ndim - 1))


@dataclasses.dataclass(frozen=True)
class Example:
  """One training example per row: the network's inputs, its target and the loss weight."""

  x: jax.Array
  time: jax.Array
  target: jax.Array
  weight: jax.Array  # (N,)


@dataclasses.dataclass(frozen=True)
class DDPM:
  schedule: diffusion.Schedule
  prediction: str = "epsilon"
  min_snr_gamma: float = 0.0  # 0: the simple (unweighted) loss.

  name = "ddpm"

  @property
  def sigmas(self) -> np.ndarray:
    """sigma_t of each level t, ascending (float64)."""
    abar = self.schedule.alphas_cumprod
    return np.sqrt((1.0 - abar) / abar)

  @property
  def sigma_min(self) -> float:
    return float(self.sigmas[0])

  @property
  def sigma_max(self) -> float:
    return float(self.sigmas[-1])

  def prior_std(self, sigma_max: float) -> float:
    """The start of sampling: x_{T-1} ~ N(0, I) is N(0, (1 + sigma^2) I) in the frame."""
    return math.sqrt(1.0 + sigma_max**2)

  def level(self, sigma: jax.Array) -> jax.Array:
    """The level whose sigma is nearest `sigma` (in log): exact on the levels' own sigmas."""
    logs = jnp.asarray(np.log(self.sigmas), jnp.float32)
    i = jnp.clip(jnp.searchsorted(logs, jnp.log(sigma)), 1, len(self.sigmas) - 1)
    below = jnp.log(sigma) - logs[i - 1] < logs[i] - jnp.log(sigma)
    return jnp.where(below, i - 1, i).astype(jnp.int32)

  def net_inputs(self, x: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    return x / jnp.sqrt(1.0 + _rows(sigma, x) ** 2), self.level(sigma)

  def denoise(self, out: jax.Array, x: jax.Array, sigma: jax.Array) -> jax.Array:
    eps = out
    if self.prediction == "v":
      eps = diffusion.eps_from_v(self.schedule, *self.net_inputs(x, sigma), out)
    return x - _rows(sigma, x) * eps

  def draw_level(self, key: jax.Array, shape: tuple) -> jax.Array:
    return jax.random.randint(key, shape, 0, self.schedule.num_steps)

  def training_example(self, x0: jax.Array, t: jax.Array, noise: jax.Array) -> Example:
    s = self.schedule
    xt = diffusion.q_sample(s, x0, t, noise)
    target = noise if self.prediction == "epsilon" else diffusion.v_target(s, x0, t, noise)
    weight = jnp.ones(t.shape)
    if self.min_snr_gamma > 0:
      abar = self.schedule.alphas_cumprod
      snr = jnp.asarray(abar / (1.0 - abar), jnp.float32)[t]
      clipped = jnp.minimum(snr, self.min_snr_gamma)
      weight = clipped / (snr if self.prediction == "epsilon" else snr + 1.0)
    return Example(xt, t, target, weight)


@dataclasses.dataclass(frozen=True)
class EDM:
  sigma_data: float = 0.5
  p_mean: float = -1.2
  p_std: float = 1.2
  sigma_min: float = 0.002
  sigma_max: float = 80.0

  name = "edm"

  def prior_std(self, sigma_max: float) -> float:
    return sigma_max

  def _scalings(self, sigma: jax.Array, like: jax.Array):
    sd2, sigma = self.sigma_data**2, _rows(sigma, like)
    c_skip = sd2 / (sigma**2 + sd2)
    c_out = sigma * self.sigma_data / jnp.sqrt(sigma**2 + sd2)
    c_in = 1.0 / jnp.sqrt(sigma**2 + sd2)
    return c_skip, c_out, c_in

  def net_inputs(self, x: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self._scalings(sigma, x)[2] * x, jnp.log(sigma) / 4.0

  def denoise(self, out: jax.Array, x: jax.Array, sigma: jax.Array) -> jax.Array:
    c_skip, c_out, _ = self._scalings(sigma, x)
    return c_skip * x + c_out * out

  def draw_level(self, key: jax.Array, shape: tuple) -> jax.Array:
    return jnp.exp(self.p_mean + self.p_std * jax.random.normal(key, shape))

  def training_example(self, x0: jax.Array, sigma: jax.Array, noise: jax.Array) -> Example:
    x = x0 + _rows(sigma, x0) * noise
    c_skip, c_out, _ = self._scalings(sigma, x0)
    net_x, time = self.net_inputs(x, sigma)
    return Example(net_x, time, (x0 - c_skip * x) / c_out, jnp.ones(sigma.shape))


@dataclasses.dataclass(frozen=True)
class Flow:
  t_mean: float = 0.0
  t_std: float = 1.0
  sigma_min: float = 0.002
  sigma_max: float = 80.0
  time_scale: float = 1000.0  # The network reads t in [0, 1000], as DDPM's levels.

  name = "flow"

  def prior_std(self, sigma_max: float) -> float:
    return sigma_max

  def net_inputs(self, x: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    return x / (1.0 + _rows(sigma, x)), self.time_scale * sigma / (1.0 + sigma)

  def denoise(self, out: jax.Array, x: jax.Array, sigma: jax.Array) -> jax.Array:
    xt, t = x / (1.0 + _rows(sigma, x)), _rows(sigma / (1.0 + sigma), x)
    return xt - t * out

  def draw_level(self, key: jax.Array, shape: tuple) -> jax.Array:
    return jax.nn.sigmoid(self.t_mean + self.t_std * jax.random.normal(key, shape))

  def training_example(self, x0: jax.Array, t: jax.Array, noise: jax.Array) -> Example:
    tr = _rows(t, x0)
    return Example((1.0 - tr) * x0 + tr * noise, self.time_scale * t, noise - x0, jnp.ones(t.shape))


Objective = DDPM | EDM | Flow


def create(c, *, schedule: diffusion.Schedule | None = None) -> Objective:
  """The objective of a `diffusion` config group (a ConfigError for bad settings)."""
  if c.objective not in NAMES:
    raise ConfigError(f"diffusion.objective {c.objective!r}; use one of {NAMES}.")
  if c.objective == "ddpm":
    if c.prediction not in diffusion.PREDICTIONS:
      raise ConfigError(
        f"diffusion.prediction {c.prediction!r}; use one of {diffusion.PREDICTIONS}."
      )
    if c.min_snr_gamma < 0:
      raise ConfigError(f"diffusion.min_snr_gamma={c.min_snr_gamma}; use 0 (off) or > 0.")
    schedule = schedule or diffusion.Schedule.create(c.schedule, c.num_steps)
    return DDPM(schedule, c.prediction, float(c.min_snr_gamma))
  if not 0 < c.sigma_min < c.sigma_max:
    raise ConfigError(
      f"diffusion.sigma_min={c.sigma_min}, sigma_max={c.sigma_max}; "
      "they need 0 < sigma_min < sigma_max."
    )
  if c.objective == "edm":
    if c.sigma_data <= 0 or c.p_std <= 0:
      raise ConfigError(f"diffusion.sigma_data={c.sigma_data}, p_std={c.p_std}; both must be > 0.")
    return EDM(c.sigma_data, c.p_mean, c.p_std, c.sigma_min, c.sigma_max)
  if c.t_std <= 0:
    raise ConfigError(f"diffusion.t_std={c.t_std}; it must be > 0.")
  return Flow(c.t_mean, c.t_std, c.sigma_min, c.sigma_max)
