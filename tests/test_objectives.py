"""The objectives (DDPM, EDM, flow matching) and the samplers against Gaussian data,
whose exact denoiser and probability-flow ODE are known in closed form:
for x_0 ~ N(m, v), E[x_0 | x_0 + s n] = m + v / (v + s^2) (x - m), and the ODE carries
x from sigma_a to sigma_b as m + (x - m) sqrt(v + sigma_b^2) / sqrt(v + sigma_a^2)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import diffusion as diffusion_config
from imgen.core.errors import ConfigError
from imgen.methods import diffusion
from imgen.methods import objectives
from imgen.methods import samplers

MEAN, STD = 0.3, 0.2
LINEAR = diffusion.Schedule.create("linear", 1000)


def exact_denoiser(x, sigma):
  s2 = sigma.reshape((-1,) + (1,) * (x.ndim - 1)) ** 2
  return MEAN + STD**2 / (STD**2 + s2) * (x - MEAN)


def ode_end(x, sigma_a):
  return MEAN + (x - MEAN) * STD / math.sqrt(STD**2 + sigma_a**2)


def _run(sampler, steps, n=4096, sigma_max=80.0, key=0, **options):
  sigmas = samplers.karras_sigmas(steps, 0.002, sigma_max)
  normal = lambda k: jax.random.normal(k, (n, 1))
  x = sigma_max * normal(jax.random.key(key))
  run = lambda x: samplers.sample(
    sampler, exact_denoiser, x, sigmas, jax.random.key(key + 1), normal, **options
  )
  return np.asarray(x), np.asarray(jax.jit(run)(x))


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_the_ode_solvers_reach_the_odes_end_point_at_their_order(sampler):
  """The largest error against the closed-form end point at 40 and 80 steps: first order
  halves it, second order quarters it (measured: Euler 0.042 -> 0.021, Heun 0.0067 ->
  0.0016, DPM-Solver++(2M) 0.0072 -> 0.0016)."""
  errors = []
  for steps in (40, 80):
    x, out = _run(sampler, steps, n=256)
    errors.append(np.abs(out - ode_end(x, 80.0)).max())
  ratio = errors[0] / errors[1]
  if sampler == "euler":
    assert 1.6 < ratio < 2.6, errors
  else:
    assert ratio > 3.2 and errors[1] < 3e-3, errors


@pytest.mark.parametrize(
  "sampler,options",
  [
    ("ddim", {"eta": 1.0}),
    ("edm", {"churn": samplers.Churn(s_churn=40, s_tmin=0.05, s_tmax=50, s_noise=1.003)}),
  ],
)
def test_the_stochastic_samplers_draw_the_gaussian(sampler, options):
  """At 256 steps (ancestral DDIM plugs in E[x_0 | x] and ignores x_0's spread: 10% too
  narrow at 64 steps, 2.5% at 256, 0.6% at 1000 on this narrow Gaussian)."""
  x, out = _run(sampler, 256, n=20_000, **options)
  assert abs(out.mean() - MEAN) < 0.01
  assert abs(out.std() / STD - 1) < 0.04
  # Not the ODE's map: fresh noise enters along the way.
  assert np.abs(out - ode_end(x, 80.0)).mean() > 0.02


def test_the_project_hook_and_resampling():
  """The hook's sigma is each step's end; resample=k evaluates each step k times."""
  seen, calls = [], []

  def project(x, sigma, key):
    del key
    seen.append(sigma)
    return x

  def counting(x, sigma):
    calls.append(1)
    return exact_denoiser(x, sigma)

  sigmas = samplers.karras_sigmas(5, 0.002, 80.0)
  normal = lambda k: jax.random.normal(k, (4, 1))
  jax.make_jaxpr(
    lambda x: samplers.sample("euler", counting, x, sigmas, jax.random.key(0), normal, resample=3)
  )(jnp.zeros((4, 1)))
  assert len(calls) == 1  # Traced once in the scan's body.

  @jax.jit
  def run(x):
    return samplers.sample(
      "ddim",
      exact_denoiser,
      x,
      sigmas,
      jax.random.key(0),
      normal,
      project=lambda x, s, k: jnp.where(s[:, None] > 1.0, x, 7.0),
    )

  # Below sigma 1 the hook writes 7s; the last step (to 0) writes them too.
  np.testing.assert_array_equal(np.asarray(run(jnp.ones((4, 1)))), 7.0)


def test_reconstruction_guidance_is_the_exact_conditional_denoiser_of_iid_pixels():
  """For i.i.d. N(0, 1) pixels D(x, s) = x / (1 + s^2), and the guided denoiser at weight 1
  is exactly E[x_0 | x, known pixels y]: y where known, D elsewhere; weight 1/2 goes half
  way, (D + y) / 2, on the known pixels."""
  keys = [jax.random.key(i) for i in range(3)]
  x = 3.0 * jax.random.normal(keys[0], (4, 5, 5, 1))
  images = jax.random.normal(keys[1], x.shape)
  known = jax.random.uniform(keys[2], x.shape) < 0.5
  sigma = jnp.array([0.1, 1.0, 3.0, 20.0])
  unit = lambda x, s: x / (1.0 + s.reshape(-1, 1, 1, 1) ** 2)
  d = unit(x, sigma)
  for weight, on_known in [(1.0, images), (0.5, (images + d) / 2), (0.0, d)]:
    guided = samplers.reconstruction_guide(unit, images, known, weight)(x, sigma)
    np.testing.assert_allclose(guided, jnp.where(known, on_known, d), rtol=1e-5, atol=1e-5)


def test_karras_and_uniform_time_grids():
  sigmas = samplers.karras_sigmas(18, 0.002, 80.0)
  assert len(sigmas) == 19 and sigmas[-1] == 0
  np.testing.assert_allclose(sigmas[[0, 17]], [80.0, 0.002])
  assert np.all(np.diff(sigmas) < 0)
  np.testing.assert_allclose(samplers.karras_sigmas(5, 1.0, 5.0, rho=1.0)[:-1], [5, 4, 3, 2, 1])
  t = np.array([s / (1 + s) for s in samplers.uniform_t_sigmas(4, 80.0)])
  np.testing.assert_allclose(np.diff(t), -t[0] / 4)
  assert samplers.evaluations("heun", 18) == 35 and samplers.evaluations("dpmpp_2m", 18) == 18


def _config(**overrides):
  return diffusion_config.diffusion_group(**{"objective": "edm", **overrides})


OBJECTIVES = {
  "ddpm": objectives.DDPM(LINEAR),
  "ddpm_v": objectives.DDPM(LINEAR, prediction="v"),
  "edm": objectives.EDM(sigma_data=0.6),
  "flow": objectives.Flow(),
}


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_the_loss_minimiser_is_the_exact_denoiser(name):
  """At one level, the least-squares fit of each objective's target on its network input
  (the best network: linear for Gaussian data) is, through `denoise`, the exact denoiser."""
  obj = OBJECTIVES[name]
  key = jax.random.key(1)
  n = 200_000
  x0 = MEAN + STD * jax.random.normal(jax.random.fold_in(key, 0), (n, 1))
  noise = jax.random.normal(jax.random.fold_in(key, 1), (n, 1))
  level = obj.draw_level(jax.random.fold_in(key, 2), (1,))
  level = jnp.full((n,), level[0])
  ex = obj.training_example(x0, level, noise)
  a = np.stack([np.ones(n), np.asarray(ex.x[:, 0], np.float64)], 1)
  coef = np.linalg.lstsq(a, np.asarray(ex.target[:, 0], np.float64), rcond=None)[0]
  # Back to the frame: the network input's x at that level's sigma.
  if name.startswith("ddpm"):
    sigma = jnp.asarray(obj.sigmas, jnp.float32)[level]
  elif name == "edm":
    sigma = level
  else:
    sigma = level / (1.0 - level)
  grid = jnp.linspace(-3, 3, 7)[:, None] * float(sigma[0] + STD) + MEAN
  sig7 = jnp.full((7,), sigma[0])
  net_x, time = obj.net_inputs(grid, sig7)
  np.testing.assert_allclose(np.asarray(time), np.asarray(ex.time[:7]), rtol=1e-5)
  best = coef[0] + coef[1] * np.asarray(net_x, np.float64)
  got = obj.denoise(jnp.asarray(best, jnp.float32), grid, sig7)
  want = exact_denoiser(grid, sig7)
  scale = float(jnp.max(jnp.abs(want - MEAN))) + STD
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=0.02 * scale)


def test_the_edm_loss_is_lambda_weighted_denoising_error():
  """||F - target||^2 = lambda(sigma) ||D - x_0||^2, lambda = (s^2 + sd^2) / (s sd)^2."""
  obj = OBJECTIVES["edm"]
  x0, noise = jnp.array([[0.4], [-0.9], [0.1]]), jnp.array([[1.0], [-0.3], [2.0]])
  sigma = jnp.array([0.01, 0.7, 30.0])
  ex = obj.training_example(x0, sigma, noise)
  out = jnp.array([[0.2], [-0.5], [1.3]])
  den = obj.denoise(out, x0 + sigma[:, None] * noise, sigma)
  lam = (sigma**2 + 0.36) / (sigma * 0.6) ** 2
  np.testing.assert_allclose((out - ex.target)[:, 0] ** 2, lam * (den - x0)[:, 0] ** 2, rtol=1e-4)
  # c_in gives the network unit-variance inputs for data of std sigma_data, and
  # c_noise = ln(sigma) / 4 (Karras et al. Table 1).
  key = jax.random.key(0)
  x0 = 0.6 * jax.random.normal(key, (100_000, 1))
  for s in (0.05, 2.0, 50.0):
    noise = jax.random.normal(jax.random.fold_in(key, 1), (100_000, 1))
    ex = obj.training_example(x0, jnp.full((100_000,), s), noise)
    assert abs(float(jnp.std(ex.x)) - 1.0) < 0.02
    np.testing.assert_allclose(ex.time[0], math.log(s) / 4, rtol=1e-6)


def test_min_snr_weights_and_the_nearest_level():
  obj = objectives.DDPM(LINEAR, min_snr_gamma=5.0)
  t = jnp.array([0, 100, 300, 999])
  ex = obj.training_example(jnp.zeros((4, 1)), t, jnp.zeros((4, 1)))
  abar = LINEAR.alphas_cumprod[np.asarray(t)]
  snr = abar / (1 - abar)
  np.testing.assert_allclose(ex.weight, np.minimum(snr, 5.0) / snr, rtol=1e-5)
  assert float(ex.weight[-1]) == 1.0 and float(ex.weight[0]) < 0.01
  v = objectives.DDPM(LINEAR, prediction="v", min_snr_gamma=5.0).training_example(
    jnp.zeros((4, 1)), t, jnp.zeros((4, 1))
  )
  np.testing.assert_allclose(v.weight, np.minimum(snr, 5.0) / (snr + 1), rtol=1e-5)
  sig = jnp.asarray(obj.sigmas, jnp.float32)
  np.testing.assert_array_equal(obj.level(sig), np.arange(1000))
  np.testing.assert_array_equal(obj.level(sig[jnp.array([10, 500])] * 1.001), [10, 500])


@pytest.mark.parametrize(
  "overrides,message",
  [
    ({"objective": "score"}, "diffusion.objective 'score'"),
    ({"sigma_min": 5.0, "sigma_max": 1.0}, "sigma_min=5.0, sigma_max=1.0"),
    ({"objective": "ddpm", "min_snr_gamma": -1.0}, "min_snr_gamma=-1.0"),
    ({"objective": "flow", "t_std": 0.0}, "t_std=0.0"),
  ],
)
def test_bad_objective_settings_are_config_errors(overrides, message):
  with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
    objectives.create(_config(**overrides))
  with pytest.raises(ConfigError, match="sampler 'plms'"):
    samplers.check("plms", 10, 0.0, "sample")
