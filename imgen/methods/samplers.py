"""Samplers of any denoiser D(x, sigma) ~ E[x_0 | x = x_0 + sigma n] (the frame of
`imgen.methods.objectives`), from sigma_max down to 0, each in one `lax.scan`.

- `ddim` (Song et al. 2021, Eq. 12, rewritten in the frame): x' = D + sqrt(s'^2 - c^2) n^ + c z
  with n^ = (x - D) / s and c = eta s' sqrt(s^2 - s'^2) / s for a step from s to s';
  eta 0 is Euler's method on the probability-flow ODE dx/ds = (x - D) / s, and eta 1
  over all of DDPM's levels is its ancestral sampler.
- `euler`: ddim with eta 0, one network evaluation a step.
- `heun`: Karras et al. 2022 Algorithm 1, Euler then the trapezoidal correction, except
  on the last step to sigma 0; 2 N - 1 evaluations for N steps.
- `edm`: Karras et al. 2022 Algorithm 2, the stochastic sampler: before each step with
  s_tmin <= s <= s_tmax the noise is raised to s^ = (1 + gamma) s,
  gamma = min(s_churn / N, sqrt(2) - 1), by fresh noise of scale s_noise, then a Heun step.
- `dpmpp_2m`: DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) in the frame, where
  lambda = -log sigma: x' = (s' / s) x + (1 - e^{-h}) D^ with h = lambda' - lambda and
  D^ = (1 + 1 / (2r)) D - D_prev / (2r), r = h_prev / h; first order on the first step
  and on the last (to sigma 0, where it is x' = D).
- `consistency`: Song et al. 2023's multistep sampler for a consistency function f (a
  distilled student's `denoiser`): x_0 = f(x, s), then x' = x_0 + s' z, fresh noise at the
  next level. Its N levels are the rho schedule's N + 1 levels without sigma_min (where
  f is the identity): one step is f(sigma_max n).

Sigma grids: `karras_sigmas` (Karras et al. Eq. 5, rho = 7) and `uniform_t_sigmas`
(evenly spaced flow-matching times t = sigma / (1 + sigma)), each with a final 0.
A `project(x, sigma, key)` hook edits each step's result (inpainting puts back the known
pixels noised to sigma), and `resample` > 1 repeats each step after re-noising its result
back to the step's start (RePaint, Lugmayr et al. 2022, with jumps of one step).
`reconstruction_guide` turns a denoiser into one that also agrees with known pixels.

A config's sampler group (`sample` or `inpaint`: sampler, steps, schedule, rho, eta, ...)
is checked by `check_group` and turned into its levels by `group_sigmas`.
"""

from collections.abc import Callable
import dataclasses
import math

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from imgen.core.errors import ConfigError
from imgen.methods import diffusion

NAMES = ("ddim", "euler", "heun", "edm", "dpmpp_2m", "consistency")
GRIDS = ("auto", "karras", "uniform_t", "levels")  # A sampler group's `schedule`.

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]  # (x, sigma rows) -> D.
Normal = Callable[[jax.Array], jax.Array]  # key -> N(0, I) noise of x's shape.


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> np.ndarray:
  """(s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho for i < N, then 0."""
  if steps == 1:
    return np.array([sigma_max, 0.0])
  ramp = np.linspace(0.0, 1.0, steps)
  lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
  return np.append((hi + ramp * (lo - hi)) ** rho, 0.0)


def uniform_t_sigmas(steps: int, sigma_max: float) -> np.ndarray:
  """Flow-matching times evenly spaced from t(sigma_max) to 0, as sigmas (ending at 0)."""
  t = np.linspace(sigma_max / (1.0 + sigma_max), 0.0, steps + 1)
  return t / (1.0 - t)


def evaluations(sampler: str, steps: int) -> int:
  """Network evaluations per image (guidance doubles each)."""
  return 2 * steps - 1 if sampler in ("heun", "edm") else steps


@dataclasses.dataclass(frozen=True)
class Churn:
  """The stochastic sampler's settings (Karras et al. 2022, Algorithm 2)."""

  s_churn: float = 0.0
  s_tmin: float = 0.0
  s_tmax: float = float("inf")
  s_noise: float = 1.0


def check_group(c, objective, path: str) -> None:
  """A ConfigError for a bad sampler group `c` of `objective` (`imgen.methods.objectives`);
  the sampler 'ddpm' is DDPM's ancestral one (`imgen.methods.diffusion.ddpm_sample`)."""
  ddpm = objective.name == "ddpm"
  if c.sampler == "ddpm":
    if not ddpm:
      raise ConfigError(
        f"{path}.sampler 'ddpm' (ancestral over DDPM's levels) needs diffusion.objective="
        f"'ddpm', not {objective.name!r}; use one of {NAMES}."
      )
  else:
    check(c.sampler, c.steps, c.eta, path)
  if c.schedule not in GRIDS:
    raise ConfigError(f"{path}.schedule {c.schedule!r}; use one of {GRIDS}.")
  if c.schedule == "levels" and not ddpm:
    raise ConfigError(
      f"{path}.schedule 'levels' is DDPM's; diffusion.objective is {objective.name!r}."
    )
  if ddpm and c.schedule in ("levels", "auto"):
    diffusion.ddim_timesteps(objective.schedule.num_steps, c.steps)
  if c.rho <= 0:
    raise ConfigError(f"{path}.rho={c.rho}; it must be > 0.")


def group_sigmas(c, objective) -> np.ndarray:
  """The descending noise levels (ending at 0) of sampler group `c`: `levels` (DDPM's own,
  evenly spaced level indices as DDIM), `karras` (rho), or `uniform_t` (flow matching's);
  `auto` is `levels` for DDPM and `karras` otherwise."""
  if c.sampler == "consistency":
    chain = karras_sigmas(c.steps + 1, objective.sigma_min, objective.sigma_max, c.rho)
    return np.append(chain[:-2], 0.0)
  schedule = c.schedule
  if schedule == "auto":
    schedule = "levels" if objective.name == "ddpm" else "karras"
  if schedule == "levels":
    ts = diffusion.ddim_timesteps(objective.schedule.num_steps, c.steps)
    return np.append(objective.sigmas[ts], 0.0)
  if schedule == "uniform_t":
    return uniform_t_sigmas(c.steps, objective.sigma_max)
  return karras_sigmas(c.steps, objective.sigma_min, objective.sigma_max, c.rho)


def levels_below(sigmas: np.ndarray, sigma: float, path: str) -> np.ndarray:
  """SDEdit's levels (Meng et al. 2022): `sigma`, then those of the schedule `sigmas`
  (descending, ending at 0) below it."""
  if not 0.0 < sigma <= sigmas[0]:
    raise ConfigError(f"{path}={sigma}; it must lie in (0, {sigmas[0]:g}], the sampler's range.")
  return np.append(np.float64(sigma), sigmas[sigmas < sigma])


def reconstruction_guide(
  denoise: Denoiser, images: jax.Array, known: jax.Array, weight: float
) -> Denoiser:
  """D'(x, s) = D(x, s) - weight (1 + s^2) grad_x 1/2 ||known (D(x, s) - images)||^2.

  The denoiser of x_0 given x and the known pixels y: D(x | y) = D(x) + s^2 grad_x
  log p(y | x), with p(y | x) approximated by N(y; D(x, s), r^2 I) on the known pixels and
  r^2 = s^2 / (1 + s^2), the posterior variance of x_0 for data of unit variance (Song et
  al. 2023, Pi-GDM); weight 1 is that approximation, exact for i.i.d. N(0, 1) pixels. This
  is Ho et al. 2022's reconstruction guidance in the frame x = x_0 + s n: the whole
  network is steered to agree with the known pixels, where putting them back after each
  step (RePaint) only ever shows them to it. One vector-Jacobian product a call."""

  def guided(x, sigma):
    def misfit(x):
      den = denoise(x, sigma)
      return 0.5 * jnp.sum(jnp.where(known, den - images, 0.0) ** 2), den

    grad, den = jax.grad(misfit, has_aux=True)(x)
    scale = weight * (1.0 + sigma**2)
    return den - scale.reshape((-1,) + (1,) * (x.ndim - 1)) * grad

  return guided


def check(sampler: str, steps: int, eta: float, path: str) -> None:
  if sampler not in NAMES:
    raise ConfigError(f"{path}.sampler {sampler!r}; use one of {NAMES}.")
  if steps < 1:
    raise ConfigError(f"{path}.steps={steps}; it must be >= 1.")
  if eta < 0:
    raise ConfigError(f"{path}.eta={eta}; it must be >= 0.")


def sample(
  sampler: str,
  denoise: Denoiser,
  x: jax.Array,
  sigmas: np.ndarray,
  key: jax.Array,
  normal: Normal,
  *,
  eta: float = 0.0,
  churn: Churn = Churn(),
  project: Callable | None = None,
  resample: int = 1,
) -> jax.Array:
  """Runs `sampler` from x at sigmas[0] through `sigmas` (descending, ending at 0)."""
  n, num = x.shape[0], len(sigmas) - 1
  rows = lambda s: jnp.full((n,), s, jnp.float32)

  def d(x, s):  # The ODE's slope (x - D) / s, and D.
    den = denoise(x, rows(s))
    return (x - den) / s, den

  def heun(x, s, s_next):
    slope, _ = d(x, s)
    euler = x + (s_next - s) * slope  # D itself when s_next is 0.

    def correct(_):
      return x + (s_next - s) * 0.5 * (slope + d(euler, s_next)[0])

    return lax.cond(s_next > 0, correct, lambda _: euler, None)

  def step(carry, s, s_next, h_prev, key):
    x, den_prev = carry
    if sampler in ("ddim", "euler"):
      _, den = d(x, s)
      e = eta if sampler == "ddim" else 0.0
      c = e * s_next * jnp.sqrt(jnp.maximum(s**2 - s_next**2, 0.0)) / s
      direction = jnp.sqrt(jnp.maximum(s_next**2 - c**2, 0.0)) * (x - den) / s
      return den + direction + c * normal(key), den
    if sampler == "consistency":
      _, den = d(x, s)
      return den + s_next * normal(key), den
    if sampler == "heun":
      return heun(x, s, s_next), den_prev
    if sampler == "edm":
      inside = (churn.s_tmin <= s) & (s <= churn.s_tmax)
      gamma = jnp.where(inside, min(churn.s_churn / num, math.sqrt(2.0) - 1.0), 0.0)
      s_hat = s * (1.0 + gamma)
      x_hat = x + s * jnp.sqrt(gamma * (2.0 + gamma)) * churn.s_noise * normal(
        key
      )  # s_hat^2 - s^2.
      return heun(x_hat, s_hat, s_next), den_prev
    # dpmpp_2m
    _, den = d(x, s)
    h = jnp.log(s) - jnp.log(jnp.maximum(s_next, 1e-30))
    r = h_prev / h
    second = (1.0 + 0.5 / r) * den - (0.5 / r) * den_prev
    use = jnp.where(jnp.isfinite(h_prev) & (s_next > 0), second, den)
    return jnp.where(s_next > 0, (s_next / s) * x + (1.0 - jnp.exp(-h)) * use, den), den

  def once(carry, s, s_next, h_prev, key):
    x, den = step(carry, s, s_next, h_prev, jax.random.fold_in(key, 0))
    if project is not None:
      x = project(x, rows(s_next), jax.random.fold_in(key, 1))
    return x, den

  def body(carry, inputs):
    i, s, s_next, h_prev = inputs
    key_i = jax.random.fold_in(key, i)
    if resample == 1:
      return once(carry, s, s_next, h_prev, key_i), None

    def repeat(j, both):
      start, _ = both
      y = once(start, s, s_next, h_prev, jax.random.fold_in(key_i, 2 * j))
      noise = normal(jax.random.fold_in(key_i, 2 * j + 1))
      back = y[0] + jnp.sqrt(s**2 - s_next**2) * noise
      return (back, y[1]), y

    _, y = lax.fori_loop(0, resample, repeat, (carry, carry))
    return y, None

  log_s = np.log(np.maximum(sigmas, 1e-30))
  h_prev = np.append(np.inf, log_s[:-2] - log_s[1:-1]).astype(np.float32)  # inf: no history.
  inputs = (
    jnp.arange(num),
    jnp.asarray(sigmas[:-1], jnp.float32),
    jnp.asarray(sigmas[1:], jnp.float32),
    jnp.asarray(h_prev),
  )
  return lax.scan(body, (x, jnp.zeros_like(x)), inputs)[0][0]
