"""Progressive distillation's math (Salimans & Ho 2022, Algorithm 2), in the frame
x = x_0 + sigma n of `imgen.methods.objectives`.

A student learns to take in one deterministic DDIM step what its teacher takes in two, so
each round halves the sampler's steps, and the next round's teacher is this round's
student. In this frame DDIM with eta 0 from s to s' is x' = D + (s' / s)(x - D), so the
student's target x~ for x at level s is the x_0 that lands one DDIM step on the teacher's
two-step result x'' at s'': x~ = (x'' - (s'' / s) x) / (1 - s'' / s) (x'' itself when
s'' = 0). The loss weighs each image's squared error by max(SNR, 1) = max(1 / s^2, 1),
the paper's "truncated SNR" weighting.

The levels are the flow-matching grid of `imgen.methods.samplers.uniform_t_sigmas`: N + 1
levels from sigma_max to 0 whose every second level is the same grid for N / 2, so round
r's teacher steps through every 2^r-th level of the first grid and its student through
every 2^(r + 1)-th.
"""

import jax
import jax.numpy as jnp
import numpy as np

from imgen.core.errors import ConfigError
from imgen.methods import samplers


def _rows(s: jax.Array, x: jax.Array) -> jax.Array:
  return jnp.reshape(s, (-1,) + (1,) * (x.ndim - 1))


def ddim_step(denoise: samplers.Denoiser, x: jax.Array, s: jax.Array, s_next: jax.Array):
  """One deterministic DDIM step from per-row levels s to s_next (>= 0)."""
  den = denoise(x, s)
  return den + _rows(s_next / s, x) * (x - den)


def base_grid(steps: int, rounds: int, sigma_max: float) -> np.ndarray:
  """The first teacher's `steps` + 1 levels; `rounds` halvings must leave >= 1 step."""
  if rounds < 1 or steps % 2**rounds:
    raise ConfigError(
      f"distill.levels={steps} with distill.rounds={rounds}: each of >= 1 rounds halves "
      "the steps, so levels must be a multiple of 2^rounds."
    )
  return samplers.uniform_t_sigmas(steps, sigma_max)


def progressive_loss(
  student: samplers.Denoiser,
  teacher: samplers.Denoiser,
  x0: jax.Array,
  noise: jax.Array,
  step: jax.Array,
  stride: jax.Array,
  grid: jax.Array,
) -> jax.Array:
  """Per image: max(1 / s^2, 1) |D_student(x, s) - x~|^2 for x = x_0 + s n at the student's
  step `step` of the levels `grid[::stride]` (s = grid[step stride]), the teacher taking
  two DDIM steps through grid[::stride // 2]."""
  half = stride // 2
  s, s_mid, s_end = grid[step * stride], grid[step * stride + half], grid[(step + 1) * stride]
  x = x0 + _rows(s, x0) * noise
  x_end = ddim_step(teacher, ddim_step(teacher, x, s, s_mid), s_mid, s_end)
  ratio = _rows(s_end / s, x0)
  goal = jax.lax.stop_gradient((x_end - ratio * x) / (1.0 - ratio))
  weight = jnp.maximum(1.0 / s**2, 1.0)
  return weight * jnp.mean((student(x, s) - goal) ** 2, axis=tuple(range(1, x0.ndim)))
