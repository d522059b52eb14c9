"""The diffusion family: the forward process and its posterior against independent
computations, the samplers on a Gaussian whose exact noise predictor is known,
the bound in bits/dim against its analytic value, bad configs, and EDM's training and
samplers. Guidance and inpainting: tests/test_inpaint.py; the paper's network and config:
tests/test_ddpm_paper.py."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from configs import diffusion as diffusion_config
from imgen.core import parallel
from imgen.core.errors import ConfigError
from imgen.data import VALID
from imgen.data.spec import DataSpec
from imgen.families.diffusion import DiffusionFamily
from imgen.methods import diffusion
from imgen.methods import objectives
from imgen.methods import samplers

LINEAR = diffusion.Schedule.create("linear", 1000)


@pytest.mark.parametrize("name", diffusion.SCHEDULES)
def test_q_sample_is_the_forward_chain_in_closed_form(name):
  s = diffusion.Schedule.create(name, 1000)
  # The chain x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) e_t: its mean factor and
  # variance by recursion, in float64.
  scale, var = np.ones(()), np.zeros(())
  scales, variances = [], []
  for beta in s.betas:
    scale, var = scale * math.sqrt(1 - beta), (1 - beta) * var + beta
    scales.append(scale)
    variances.append(var)
  x0, noise = jnp.full((1000, 1), 0.7), jnp.ones((1000, 1))
  closed = np.asarray(diffusion.q_sample(s, x0, jnp.arange(1000), noise))[:, 0]
  np.testing.assert_allclose(
    closed, 0.7 * np.array(scales) + np.sqrt(variances), rtol=1e-5, atol=1e-6
  )

  # And by running the chain itself on 40,000 draws, to level 300 and to the end.
  rng = np.random.default_rng(0)
  x = np.full(40_000, 0.7)
  for t, beta in enumerate(s.betas):
    x = math.sqrt(1 - beta) * x + math.sqrt(beta) * rng.standard_normal(x.shape)
    if t in (300, 999):
      abar = s.alphas_cumprod[t]
      assert abs(x.mean() - 0.7 * math.sqrt(abar)) < 4 * math.sqrt((1 - abar) / len(x))
      assert abs(x.std() / math.sqrt(1 - abar) - 1) < 0.02


def test_the_schedules_and_the_v_parameterisation():
  np.testing.assert_allclose(LINEAR.betas[[0, -1]], [1e-4, 0.02])
  cosine = diffusion.Schedule.create("cosine", 1000)
  f = lambda t: np.cos((t / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2
  np.testing.assert_allclose(cosine.alphas_cumprod[:900], f(np.arange(1, 901)) / f(0), rtol=1e-9)
  assert cosine.betas.max() <= 0.999
  x0, eps = jnp.array([[0.5], [-0.9], [0.1]]), jnp.array([[1.0], [0.3], [-2.0]])
  t = jnp.array([0, 400, 999])
  xt = diffusion.q_sample(LINEAR, x0, t, eps)
  v = diffusion.v_target(LINEAR, x0, t, eps)
  np.testing.assert_allclose(diffusion.eps_from_v(LINEAR, xt, t, v), eps, atol=1e-5)
  np.testing.assert_allclose(diffusion.x0_from_eps(LINEAR, xt, t, eps), x0, atol=1e-4)


def test_the_posterior_is_bayes_rule_on_the_two_gaussians():
  """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0), both Gaussian."""
  s, t = LINEAR, np.array([1, 10, 200, 500, 999])
  x0, xt = np.array([0.3, -0.8, 0.5, 1.0, -0.1]), np.array([0.1, 0.4, -1.2, 0.6, 2.0])
  abar_prev, beta = s.alphas_cumprod[t - 1], s.betas[t]
  precision = 1 / (1 - abar_prev) + (1 - beta) / beta
  var = 1 / precision
  mean = var * (np.sqrt(abar_prev) * x0 / (1 - abar_prev) + np.sqrt(1 - beta) * xt / beta)
  got_mean, got_log_var = diffusion.q_posterior(
    s, jnp.asarray(x0)[:, None], jnp.asarray(xt)[:, None], jnp.asarray(t)
  )
  np.testing.assert_allclose(np.asarray(got_mean)[:, 0], mean, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.exp(np.asarray(got_log_var)[:, 0]), var, rtol=1e-4)


MEAN, STD = 0.3, 0.2  # The toy data: N(0.3, 0.2^2) in one dimension.


def exact_eps(s: diffusion.Schedule, mean=MEAN, std=STD):
  """E[eps | x_t] for Gaussian data: the exact noise predictor."""

  def predict(x, t):
    abar = jnp.asarray(s.alphas_cumprod, jnp.float32)[t][:, None]
    return jnp.sqrt(1 - abar) * (x - jnp.sqrt(abar) * mean) / (abar * std**2 + 1 - abar)

  return predict


def ddpm_denoiser(s: diffusion.Schedule, predict=None):
  """The frame's D(x, sigma) of a DDPM noise predictor (the exact one by default)."""
  obj = objectives.DDPM(s)
  predict = predict or exact_eps(s)
  return lambda x, sigma: obj.denoise(predict(*obj.net_inputs(x, sigma)), x, sigma)


def _levels(s: diffusion.Schedule, steps: int) -> np.ndarray:
  config = diffusion_config.sampler_group(steps=steps)
  return samplers.group_sigmas(config, objectives.DDPM(s))


@pytest.mark.parametrize(
  "sampler,options",
  [
    ("ddpm", {}),
    ("ddpm", {"variance": "large"}),
    ("ddim", {"steps": 1000}),
    ("ddim", {"steps": 1000, "eta": 1.0}),
  ],
)
def test_samplers_with_the_exact_noise_recover_a_gaussian(sampler, options):
  """Over all levels (deterministic DDIM is a first-order solver: with 50 levels
  this narrow Gaussian comes out 11% too narrow, with 200 levels 2.5%). DDIM runs on
  the DDPM objective's denoiser in the frame of imgen.methods.samplers."""
  s, n = LINEAR, 20_000
  normal = lambda k: jax.random.normal(k, (n, 1))
  x = normal(jax.random.key(0))
  if sampler == "ddpm":
    run = lambda x: diffusion.ddpm_sample(
      s, exact_eps(s), x, jax.random.key(1), normal, clip=False, **options
    )
  else:
    sigmas = _levels(s, options["steps"])
    run = lambda x: samplers.sample(
      "ddim",
      ddpm_denoiser(s),
      x * math.sqrt(1 + sigmas[0] ** 2),
      sigmas,
      jax.random.key(1),
      normal,
      eta=options.get("eta", 0.0),
    )
  out = np.asarray(jax.jit(run)(x))
  assert abs(out.mean() - MEAN) < 0.01
  assert abs(out.std() / STD - 1) < 0.04


def test_ddim_with_eta_0_is_deterministic_and_eta_1_is_not():
  s, n = LINEAR, 64
  normal = lambda k: jax.random.normal(k, (n, 1))
  x = normal(jax.random.key(0))
  sigmas = _levels(s, 20)
  draw = lambda eta, key: np.asarray(
    samplers.sample("ddim", ddpm_denoiser(s), x, sigmas, jax.random.key(key), normal, eta=eta)
  )
  np.testing.assert_array_equal(draw(0.0, 1), draw(0.0, 2))
  assert np.abs(draw(1.0, 1) - draw(1.0, 2)).max() > 0.01


def test_ddim_timesteps_span_the_chain():
  assert list(diffusion.ddim_timesteps(1000, 5)) == [999, 749, 500, 250, 0]
  assert list(diffusion.ddim_timesteps(10, 10)) == list(range(9, -1, -1))
  with pytest.raises(ConfigError, match=r"sample.steps=0; use 1..1000"):
    diffusion.ddim_timesteps(1000, 0)


def _point_image() -> np.ndarray:
  """One 4x4 grey image on the 256 levels, the end levels included."""
  levels = np.array([0, 255, 17, 128, 200, 3, 99, 254, 1, 64, 180, 77, 250, 5, 140, 33])
  return (levels / 127.5 - 1.0).reshape(1, 4, 4, 1).astype(np.float32)


def analytic_nats(s: diffusion.Schedule, x0: np.ndarray, variance: str) -> float:
  """The bound for data that is the single image x0, when the network predicts
  the exact noise: then p(x_{t-1} | x_t) has the posterior's mean, so L_t is the
  KL between Gaussians of equal mean (0 for the posterior's own variance);
  L_0 is the mass of N(x0, sigma_0^2) on x0's bin; L_T is in closed form."""
  abar, post = s.alphas_cumprod, s.posterior_variance
  d = x0.size
  sigma0 = math.sqrt(post[1])
  half = 1 / 255
  upper = np.where(x0 > 1 - half, 1.0, scipy.stats.norm.cdf(half / sigma0))
  lower = np.where(x0 < -1 + half, 0.0, scipy.stats.norm.cdf(-half / sigma0))
  decoder = -np.sum(np.log(upper - lower))
  a = abar[-1]
  prior = np.sum(0.5 * (a * x0**2 + (1 - a) - 1 - np.log(1 - a)))
  kl = 0.0
  if variance == "large":
    ratio = post[1:] / s.betas[1:]  # KL(N(m, post) || N(m, beta)) per dimension.
    kl = d * np.sum(0.5 * (-np.log(ratio) + ratio - 1))
  return float(decoder + prior + kl)


@pytest.mark.parametrize("variance", diffusion.VARIANCES)
def test_the_bound_of_the_exact_noise_predictor_is_its_analytic_value(variance):
  s, x0 = diffusion.Schedule.create("linear", 50), _point_image()
  exact = lambda x, t: diffusion.eps_from_x0(s, x, t, jnp.asarray(x0))
  noise = jax.random.normal(jax.random.key(0), (50, *x0.shape[1:]))
  x0s = jnp.repeat(jnp.asarray(x0), 50, axis=0)
  terms = diffusion.vb_term(s, exact, x0s, jnp.arange(50), noise, variance, clip=True)
  total = float(jnp.sum(terms) + diffusion.prior_kl(s, jnp.asarray(x0))[0])
  np.testing.assert_allclose(total, analytic_nats(s, x0, variance), rtol=1e-4)


@pytest.mark.parametrize("variance", diffusion.VARIANCES)
def test_the_family_reports_the_analytic_bits_per_dim(monkeypatch, variance):
  """The eval step and its summary, with the network replaced by the exact noise
  predictor of single-image data: the bits/dim of the analytic bound."""
  config = diffusion_config.get_config("smoke")
  config.model.image_size = 4
  config.model.channel_mults = (1,)
  config.diffusion.update(objective="ddpm", num_steps=20, variance=variance)
  config.eval.vb_timesteps = 19 if variance == "large" else 3  # 'small': every L_t is 0.
  family = DiffusionFamily(config, DataSpec.of_images(4, 1))
  s, x0 = family.schedule, _point_image()
  exact = lambda params, labels, guidance=1.0: (
    lambda x, t: diffusion.eps_from_x0(s, x, t, jnp.asarray(x0))
  )
  monkeypatch.setattr(family, "eps_predictor", exact)
  state = parallel.replicate(family.init_state(jax.random.key(0)))
  batch = {"image": np.repeat(x0, 6, axis=0)[None], VALID: np.ones((1, 6), np.float32)}
  sums = jax.pmap(family.make_eval_step(), axis_name=parallel.AXIS, in_axes=(0, 0, None))(
    state, batch, jax.random.key(3)
  )
  scalars, _ = family.summarize_eval(jax.device_get(parallel.unreplicate(sums)))
  want = analytic_nats(s, x0, variance) / (16 * math.log(2))
  np.testing.assert_allclose(scalars["bits_per_dim"], want, rtol=1e-4)
  assert scalars["num_images"] == 6


def test_bad_diffusion_configs_fail_with_a_clear_message():
  for change, message in [
    (
      lambda c: c.diffusion.update(objective="ddpm", schedule="quadratic"),
      "diffusion.schedule 'quadratic'",
    ),
    (lambda c: c.diffusion.update(objective="ddpm", prediction="x0"), "diffusion.prediction 'x0'"),
    (
      lambda c: c.diffusion.update(objective="ddpm", variance="learned"),
      "diffusion.variance 'learned'",
    ),
    (
      lambda c: c.diffusion.update(objective="ddpm") or c.sample.update(steps=21),
      r"sample.steps=21; use 1..20",
    ),
    (lambda c: c.sample.update(sampler="pndm"), "sample.sampler 'pndm'"),
    (lambda c: c.sample.update(guidance_scale=3.0), "needs a conditional model"),
    (lambda c: c.inpaint.update(resample=0), "inpaint.resample=0"),
    (lambda c: c.inpaint.update(reconstruction=-1.0), "inpaint.reconstruction=-1.0"),
    (lambda c: c.model.update(norm_groups=3), "model.norm_groups=3 does not divide"),
    (lambda c: c.model.update(channel_mults=(1, 2, 2, 2)), "cannot be halved 3 times"),
    (lambda c: c.diffusion.update(objective="score"), "diffusion.objective 'score'"),
    (lambda c: c.diffusion.update(objective="edm", sigma_min=90.0), "sigma_min=90.0, sigma_max=20"),
    (
      lambda c: c.diffusion.update(objective="flow") or c.sample.update(sampler="ddpm"),
      "sample.sampler 'ddpm' .* needs diffusion.objective='ddpm'",
    ),
    (
      lambda c: c.diffusion.update(objective="edm") or c.inpaint.update(schedule="levels"),
      "inpaint.schedule 'levels' is DDPM's",
    ),
    (lambda c: c.sample.update(schedule="cosine"), "sample.schedule 'cosine'"),
  ]:
    config = diffusion_config.get_config("smoke")
    change(config)
    with pytest.raises(ConfigError, match=message):
      DiffusionFamily(config, DataSpec.of_images(28, 1))


def test_edm_trains_and_its_samplers_draw_through_the_family():
  """Three EDM train steps change the weights and keep the loss finite (flow matching, the
  default, trains in every smoke run); then samplers run through the family. A fresh EDM
  U-Net outputs ~0 (its last layer is initialised at 1e-10), so its denoiser is c_skip x:
  that of Gaussian data N(0, 0.3^2), which the samplers must then draw: Heun within 3% at
  40 steps (a scalar Heun by hand on this ODE: 1.0%), the churned sampler within 5% (3.1%
  measured). The other samplers share this path (tests/test_objectives.py checks them)."""
  config = diffusion_config.get_config("smoke")
  config.model.image_size = 8
  config.diffusion.update(objective="edm", sigma_data=0.3)
  config.sample.update(steps=40, clip=False, s_churn=10.0, s_tmin=0.05, s_tmax=50.0)
  family = DiffusionFamily(config, DataSpec.of_images(8, 1))
  state = parallel.replicate(family.init_state(jax.random.key(0)))
  images = jax.random.uniform(jax.random.key(1), (1, 8, 8, 8, 1), minval=-1, maxval=1)
  step = jax.pmap(family.make_train_step(), axis_name=parallel.AXIS, in_axes=(0, 0, None))
  trained = state
  for i in range(3):
    trained, metrics = step(trained, {"image": images}, jax.random.key(i))
    assert np.isfinite(float(metrics["loss"][0]))
  before, after = jax.tree.leaves(state.net.params), jax.tree.leaves(trained.net.params)
  changed = [float(jnp.abs(a - b).max()) for a, b in zip(before, after, strict=True)]
  assert max(changed) > 0

  for sampler, tolerance in (("heun", 0.03), ("edm", 0.05)):
    config.sample.sampler = sampler
    draw = jax.pmap(
      lambda p, k: family.sample_chain(p, k, 256, None, config.sample),
      axis_name=parallel.AXIS,
      in_axes=(0, None),
    )
    out = np.asarray(draw(state.net.params, jax.random.key(5)))
    assert np.isfinite(out).all(), sampler
    assert abs(out.std() / 0.3 - 1) < tolerance, (sampler, out.std())
