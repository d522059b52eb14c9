"""Consistency distillation's math (Song et al. 2023, "Consistency Models", Algorithm 2),
in the frame x = x_0 + sigma n of `imgen.methods.objectives`.

- `consistency_function`: f(x, s) = c_skip(s) x + c_out(s) F(x, s), the paper's Eq. 3
  scalings with sigma_min = eps, so that f(x, sigma_min) = x exactly. F is the network in
  EDM's preconditioning, read from any objective's denoiser D = c_skip' x + c_out' F
  (Karras et al. 2022, Table 1): F = (D - c_skip' x) / c_out'. As sigma_min -> 0, f is D
  itself, so a student initialised with the teacher's weights starts as the teacher's
  one-step denoiser.
- `heun_step`: the teacher's step along the probability-flow ODE dx/ds = (x - D(x, s)) / s
  between two levels (Karras et al.'s Heun step, the paper's solver for CD).
- `training_levels`: the N levels of Karras et al.'s rho schedule that a step picks an
  adjacent pair of (the paper's N = 18 on CIFAR-10), with k - 1 more levels of the same
  schedule inside each interval when the teacher takes k Heun steps across it (fewer
  intervals for the consistency to travel through, the teacher's chain as fine).
- `distance`: the metric d between the student's and the target's outputs, per image:
  'l2' (mean square) or 'pseudo_huber' (Song & Dhariwal 2023, "Improved techniques for
  training consistency models": sqrt(|a - b|^2 + c^2) - c with c = 0.00054 sqrt(dim));
  the paper's best, LPIPS, needs pretrained VGG weights that do not ship offline.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from imgen.core.errors import ConfigError
from imgen.methods import samplers

Denoiser = samplers.Denoiser
DISTANCES = ("l2", "pseudo_huber")


def _rows(s: jax.Array, x: jax.Array) -> jax.Array:
  return jnp.reshape(s, (-1,) + (1,) * (x.ndim - 1))


def boundary_scalings(
  sigma: jax.Array, sigma_min: float, sigma_data: float
) -> tuple[jax.Array, jax.Array]:
  """(c_skip, c_out) of Song et al.'s Eq. 3 (their appendix C): c_skip(sigma_min) = 1,
  c_out(sigma_min) = 0."""
  c_skip = sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)
  c_out = sigma_data * (sigma - sigma_min) / jnp.sqrt(sigma_data**2 + sigma**2)
  return c_skip, c_out


def consistency_function(denoise: Denoiser, sigma_min: float, sigma_data: float) -> Denoiser:
  """f(x, sigma) from a denoiser D(x, sigma) (see the module's docstring)."""

  def f(x: jax.Array, sigma: jax.Array) -> jax.Array:
    s = _rows(sigma, x)
    c_skip, c_out = boundary_scalings(s, sigma_min, sigma_data)
    edm_skip = sigma_data**2 / (s**2 + sigma_data**2)
    edm_out = s * sigma_data / jnp.sqrt(s**2 + sigma_data**2)
    network = (denoise(x, sigma) - edm_skip * x) / edm_out
    return c_skip * x + c_out * network

  return f


def heun_step(denoise: Denoiser, x: jax.Array, sigma: jax.Array, sigma_next: jax.Array):
  """x at level `sigma_next` (> 0) from x at `sigma` (per-row levels): an Euler step of the
  probability-flow ODE, then the trapezoidal correction. Two evaluations of D."""
  s, s_next = _rows(sigma, x), _rows(sigma_next, x)
  slope = (x - denoise(x, sigma)) / s
  euler = x + (s_next - s) * slope
  slope_next = (euler - denoise(euler, sigma_next)) / s_next
  return x + (s_next - s) * 0.5 * (slope + slope_next)


def training_levels(
  n: int, sigma_min: float, sigma_max: float, rho: float, substeps: int = 1
) -> np.ndarray:
  """The descending levels sigma_max .. sigma_min of the rho schedule (no final 0): the n
  levels of the student's pairs, each interval cut into `substeps` by the same schedule
  ((n - 1) substeps + 1 levels; level i of the n is number i * substeps)."""
  if n < 2 or substeps < 1:
    raise ConfigError(
      f"distill.levels={n}, teacher_substeps={substeps}; consistency distillation needs "
      ">= 2 levels and >= 1 teacher step per interval."
    )
  return samplers.karras_sigmas((n - 1) * substeps + 1, sigma_min, sigma_max, rho)[:-1]


def distance(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """d(a, b) per image (rows of a and b)."""
  if name not in DISTANCES:
    raise ConfigError(f"distill.distance {name!r}; use one of {DISTANCES}.")
  axes = lambda a: tuple(range(1, a.ndim))
  if name == "l2":
    return lambda a, b: jnp.mean((a - b) ** 2, axis=axes(a))

  def pseudo_huber(a, b):
    c = 0.00054 * np.sqrt(np.prod(a.shape[1:]))
    return jnp.sqrt(jnp.sum((a - b) ** 2, axis=axes(a)) + c**2) - c

  return pseudo_huber


def consistency_loss(
  student: Denoiser,
  target: Denoiser,
  teacher: Denoiser,
  x0: jax.Array,
  noise: jax.Array,
  level: jax.Array,
  levels: jax.Array,
  metric: Callable[[jax.Array, jax.Array], jax.Array],
  substeps: int = 1,
) -> jax.Array:
  """Per image: d(f_student(x_{i}, s_i), f_target(x^_{i+1}, s_{i+1})) for x_i = x_0 + s_i n
  at each row's interval i (< (len(levels) - 1) / substeps; `levels` descending, from
  `training_levels`) and x^_{i+1} the teacher's `substeps` Heun steps from it; the target
  side carries no gradient."""
  start = level * substeps
  s, s_next = levels[start], levels[start + substeps]
  x = x0 + _rows(s, x0) * noise

  def teacher_step(j, x):
    return heun_step(teacher, x, levels[start + j], levels[start + j + 1])

  x_next = jax.lax.stop_gradient(jax.lax.fori_loop(0, substeps, teacher_step, x))
  goal = jax.lax.stop_gradient(target(x_next, s_next))
  return metric(student(x, s), goal)
