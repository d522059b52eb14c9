"""Consistency distillation: its math against a Gaussian whose probability-flow ODE is
known in closed form, the multistep sampler, and the family's checks of its teacher.
(Training, resuming, 4 devices and bfloat16 are the shared family tests.)"""

import os
import re

from helpers import shared_training
from helpers import smoke_config
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from configs import common
from imgen import data
from imgen import families
from imgen.core import checkpoints
from imgen.core.errors import ConfigError
from imgen.methods import consistency
from imgen.methods import progressive
from imgen.methods import samplers
from imgen.modes import train

M, S = 0.3, 0.5  # Data: every pixel N(M, S^2).
SIGMA_MIN, SIGMA_MAX = 0.002, 20.0


def exact_denoiser(x, sigma):
  """E[x_0 | x = x_0 + sigma n] for x_0 ~ N(M, S^2)."""
  s = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
  return M + S**2 / (S**2 + s**2) * (x - M)


def ode_to_sigma_min(x, sigma):
  """The probability-flow ODE's solution from level sigma down to SIGMA_MIN: every level's
  marginal is N(M, S^2 + sigma^2), and the flow scales x - M by the ratio of spreads."""
  return M + (x - M) * jnp.sqrt(S**2 + SIGMA_MIN**2) / jnp.sqrt(S**2 + sigma**2)


@pytest.mark.parametrize("num_levels,substeps", [(18, 1), (4, 6)])
def test_distillation_from_the_exact_teacher_learns_the_odes_end_point(num_levels, substeps):
  """A student with an affine denoiser a_i + b_i x per training level, started as the
  teacher (a one-step denoiser, far from the ODE's map), distilled with Heun steps of the
  exact teacher: its one-step map from sigma_max must be the ODE's, x -> M + (x - M) k.
  With `substeps` the teacher crosses each of the student's intervals in that many."""
  levels = consistency.training_levels(num_levels, SIGMA_MIN, SIGMA_MAX, 7.0, substeps)
  mine = levels[::substeps]  # The student's levels.
  fine, table = jnp.asarray(levels, jnp.float32), jnp.asarray(mine, jnp.float32)
  start = S**2 / (S**2 + mine**2)
  params = {"a": jnp.asarray(M * (1 - start), jnp.float32), "b": jnp.asarray(start, jnp.float32)}

  def student(p):
    def denoise(x, sigma):
      i = jnp.argmin(jnp.abs(table[None, :] - sigma[:, None]), axis=1)
      return p["a"][i][:, None] + p["b"][i][:, None] * x

    return consistency.consistency_function(denoise, SIGMA_MIN, 0.5)

  metric = consistency.distance("l2")
  optimizer = optax.adam(3e-3)

  @jax.jit
  def step(p, target, opt, key):
    x0 = M + S * jax.random.normal(jax.random.fold_in(key, 0), (512, 4))
    noise = jax.random.normal(jax.random.fold_in(key, 1), (512, 4))
    level = jax.random.randint(jax.random.fold_in(key, 2), (512,), 0, len(mine) - 1)

    def loss(q):
      rows = consistency.consistency_loss(
        student(q), student(target), exact_denoiser, x0, noise, level, fine, metric, substeps
      )
      return jnp.mean(rows)

    grads = jax.grad(loss)(p)
    updates, opt = optimizer.update(grads, opt, p)
    p = optax.apply_updates(p, updates)
    target = jax.tree.map(lambda t, q: 0.9 * t + 0.1 * q, target, p)  # mu = 0.9.
    return p, target, opt

  initial, target, opt = params, params, optimizer.init(params)
  for i in range(3000):
    params, target, opt = step(params, target, opt, jax.random.key(i))

  # CD's fixed point is the teacher's discretised ODE: its Heun steps down the levels to
  # sigma_min, which the student must match; that chain is within 5% of the exact ODE at
  # 18 levels (the slope's error; 1% at 40).
  x = jnp.linspace(-40.0, 40.0, 9)[:, None]
  for first in (0, num_levels // 3, 2 * num_levels // 3):
    chain = x
    for s, s_next in zip(
      levels[first * substeps : -1], levels[first * substeps + 1 :], strict=True
    ):
      rows = jnp.full((9,), s), jnp.full((9,), s_next)
      chain = consistency.heun_step(exact_denoiser, chain, *rows)
    got = student(target)(x, jnp.full((9,), mine[first]))
    np.testing.assert_allclose(got, chain, rtol=2e-3, atol=2e-3)
    exact = ode_to_sigma_min(np.asarray(x), mine[first])
    np.testing.assert_allclose(got, exact, rtol=0.05, atol=0.01)
  before = student(initial)(x, jnp.full((9,), SIGMA_MAX))
  assert np.abs(before - ode_to_sigma_min(np.asarray(x), SIGMA_MAX)).max() > 0.5


def test_progressive_rounds_from_the_exact_teacher_learn_its_ddim_chain_in_one_step():
  """Five rounds of progressive distillation, 32 DDIM steps to 1, from the exact teacher, of
  a student with an affine denoiser per level: its one DDIM step from sigma_max must land
  where the teacher's 32 steps land (their fixed point), which is the ODE's end point to
  the chain's own error (first order: 4.4% of the slope at 32 steps)."""
  grid = progressive.base_grid(32, 5, SIGMA_MAX)
  table = jnp.asarray(grid, jnp.float32)
  start = S**2 / (S**2 + grid[:-1] ** 2)
  params = {"a": jnp.asarray(M * (1 - start), jnp.float32), "b": jnp.asarray(start, jnp.float32)}

  def denoiser(p):
    def denoise(x, sigma):
      i = jnp.argmin(jnp.abs(table[None, :-1] - sigma[:, None]), axis=1)
      return p["a"][i][:, None] + p["b"][i][:, None] * x

    return denoise

  optimizer = optax.adam(3e-3)

  @jax.jit
  def step(p, teacher, opt, stride, key):
    x0 = M + S * jax.random.normal(jax.random.fold_in(key, 0), (512, 4))
    noise = jax.random.normal(jax.random.fold_in(key, 1), (512, 4))
    j = jax.random.randint(jax.random.fold_in(key, 2), (512,), 0, 32 // stride)

    def loss(q):
      rows = progressive.progressive_loss(
        denoiser(q), denoiser(teacher), x0, noise, j, stride, table
      )
      return jnp.mean(rows)

    updates, opt = optimizer.update(jax.grad(loss)(p), opt, p)
    return optax.apply_updates(p, updates), opt

  teacher = params  # The exact denoiser at every level of the grid.
  for r in range(5):
    opt = optimizer.init(params)
    for i in range(1500):
      params, opt = step(params, teacher, opt, jnp.int32(2 ** (r + 1)), jax.random.key(i))
    teacher = params

  x = jnp.linspace(-40.0, 40.0, 9)[:, None]
  rows = lambda s: jnp.full((9,), s, jnp.float32)
  one_step = progressive.ddim_step(denoiser(params), x, rows(grid[0]), rows(0.0))
  chain = x
  for s, s_next in zip(grid[:-1], grid[1:], strict=True):
    chain = progressive.ddim_step(exact_denoiser, chain, rows(s), rows(s_next))
  np.testing.assert_allclose(one_step, chain, rtol=5e-3, atol=5e-3)
  # 32 Euler steps miss the ODE's slope by 4.4%; the student inherits that, no more.
  np.testing.assert_allclose(one_step, ode_to_sigma_min(x, SIGMA_MAX), rtol=0.06, atol=0.01)
  first = progressive.ddim_step(exact_denoiser, x, rows(grid[0]), rows(0.0))
  assert np.abs(first - chain).max() > 0.3  # What the teacher does in one step.


def test_the_consistency_function_keeps_the_boundary_and_is_the_denoiser_without_it():
  x = jax.random.normal(jax.random.key(0), (3, 4, 4, 1)) * 2.0
  f = consistency.consistency_function(exact_denoiser, SIGMA_MIN, 0.5)
  np.testing.assert_allclose(f(x, jnp.full((3,), SIGMA_MIN)), x, rtol=1e-6)
  at_zero = consistency.consistency_function(exact_denoiser, 0.0, 0.5)  # Then f is D.
  for sigma in (0.01, 0.5, 5.0, 20.0):
    s = jnp.full((3,), sigma)
    np.testing.assert_allclose(at_zero(x, s), exact_denoiser(x, s), rtol=1e-5, atol=1e-6)
    assert np.abs(f(x, s) - exact_denoiser(x, s)).max() > 0  # sigma_min moves it a little.


def test_heun_steps_of_the_exact_denoiser_follow_the_ode():
  x = jnp.linspace(-30.0, 30.0, 7)[:, None]
  s, s_next = jnp.full((7,), 10.0), jnp.full((7,), 7.0)
  got = consistency.heun_step(exact_denoiser, x, s, s_next)
  exact = M + (x - M) * np.sqrt(S**2 + 49.0) / np.sqrt(S**2 + 100.0)
  np.testing.assert_allclose(got, exact, rtol=1e-3)
  euler = x + (s_next - s)[:, None] * (x - exact_denoiser(x, s)) / s[:, None]
  assert np.abs(euler - exact).max() > 2 * np.abs(got - exact).max()  # Heun's correction.


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_the_multistep_sampler_of_the_exact_consistency_function_draws_the_data(steps):
  """f(x, s) = the ODE's map to sigma_min: 1, 2 and 4 steps of the consistency sampler
  from N(0, sigma_max^2) give N(M, S^2) (to sigma_min^2 and the prior's S^2 / sigma_max^2)."""
  group = {"sampler": "consistency", "steps": steps, "rho": 7.0}

  class Objective:
    name, sigma_min, sigma_max = "flow", SIGMA_MIN, SIGMA_MAX

  sigmas = samplers.group_sigmas(type("Group", (), group), Objective)
  assert len(sigmas) == steps + 1 and np.isclose(sigmas[0], SIGMA_MAX) and sigmas[-1] == 0.0
  assert sigmas[-2] > 10 * SIGMA_MIN or steps == 1  # No step at sigma_min, where f is x.
  n = 20_000
  normal = lambda k: jax.random.normal(k, (n, 1))
  exact_f = lambda x, s: ode_to_sigma_min(x, s.reshape(-1, 1))
  x = SIGMA_MAX * normal(jax.random.key(1))
  out = samplers.sample("consistency", exact_f, x, sigmas, jax.random.key(2), normal)
  assert abs(float(jnp.mean(out)) - M) < 0.02
  assert abs(float(jnp.std(out)) / S - 1.0) < 0.02


def _family(config):
  builder = data.get_builder(config.data.name, config.data.data_dir)
  spec = data.DataSpec.from_builder(builder, config.data.image_key, config.model.image_size)
  return families.create(config, spec)


def test_the_student_starts_as_the_teacher_and_refuses_other_teachers(data_dir, tmp_path):
  config = smoke_config("distill", data_dir)
  teacher = config.distill.teacher_workdir
  state = _family(config).init_state(jax.random.key(0))
  saved = _teacher_net(teacher)
  trees = (state.net.params, state.net.ema_params, state.teacher, state.target)
  for tree in trees:  # The teacher's EMA.
    jax.tree.map(np.testing.assert_array_equal, tree, saved["ema_params"])
  kernel = lambda tree: tree["Conv_0"]["kernel"]
  assert not np.array_equal(kernel(saved["ema_params"]), kernel(saved["params"]))

  cases = [
    ("teacher_workdir", "", "distill.teacher_workdir is empty"),
    ("teacher_workdir", str(tmp_path), "holds no trained run"),
    ("model.channels", 16, "model.channels=8 (this config: 16)"),
    ("diffusion.objective", "ddpm", "not ddpm"),
    ("diffusion.sigma_max", 40.0, "diffusion.sigma_max=20.0 (this config: 40.0)"),
    ("teacher_guidance", 2.0, "needs a class-conditional teacher"),
    ("distance", "lpips", "distill.distance 'lpips'"),
    ("mu", 1.0, "distill.mu=1.0"),
  ]
  for field, value, message in cases:
    bad = config.copy_and_resolve_references()
    group, name = field.split(".") if "." in field else ("distill", field)
    bad[group][name] = value
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
      _family(bad)
    assert "\n" not in str(e.value)

  cnn = shared_training("smoke-cnn", smoke_config("cnn", data_dir))[0]
  bad = config.copy_and_resolve_references()
  bad.distill.teacher_workdir = cnn
  with pytest.raises(ConfigError, match="holds a 'cnn' run"):
    _family(bad)


def test_the_target_network_follows_the_updated_student_at_mu(data_dir, tmp_path):
  """After one step the target is mu (the teacher's weights) + (1 - mu) (the student's new
  weights), apart from the samples' EMA (optim.ema_decay)."""
  config = smoke_config("distill", data_dir, num_steps=1, steps_per_dispatch=1)
  config.distill.mu, config.optim.ema_decay = 0.75, 0.5
  config.optim.warmup_steps = 0  # The smoke config's warm-up would make this step's rate 0.
  config.eval.update(every_steps=0, sample_every=0)
  workdir = str(tmp_path / "one-step")
  train.train_and_evaluate(config, workdir)
  manager = checkpoints.make_manager(workdir, keep=1, create=False)
  saved = manager.restore(1, args=ocp.args.StandardRestore())
  manager.close()
  params, teacher = saved["net"]["params"], saved["teacher"]
  expect = lambda decay: jax.tree.map(lambda t, p: decay * t + (1 - decay) * p, teacher, params)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # Rounding.
  jax.tree.map(close, saved["target"], expect(0.75))
  jax.tree.map(close, saved["net"]["ema_params"], expect(0.5))
  moved = jax.tree.leaves(jax.tree.map(lambda p, t: not np.allclose(p, t), params, teacher))
  assert sum(moved) > len(moved) / 2, f"{sum(moved)} of {len(moved)} weights moved"


def test_progressive_rounds_hand_the_student_to_the_next_teacher(data_dir, tmp_path):
  """configs/distill.py:progressive_smoke: 2 rounds of 3 steps. The teacher of round 2 is
  the student as round 1 ended (the checkpoint of step 3); round 1's was the teacher run's."""
  config = smoke_config("distill", data_dir)
  progressive_config = common.default_config("distill", "progressive_smoke")
  progressive_config.data.data_dir = data_dir
  progressive_config.distill.teacher_workdir = config.distill.teacher_workdir
  workdir = str(tmp_path / "progressive")
  train.train_and_evaluate(progressive_config, workdir)
  saved = {}
  for step in (3, 6):
    manager = checkpoints.make_manager(workdir, keep=1, create=False)
    saved[step] = manager.restore(step, args=ocp.args.StandardRestore())
    manager.close()
  jax.tree.map(np.testing.assert_array_equal, saved[6]["teacher"], saved[3]["net"]["params"])
  teacher = _teacher_net(config.distill.teacher_workdir)["ema_params"]
  jax.tree.map(np.testing.assert_array_equal, saved[3]["teacher"], teacher)
  assert os.path.isfile(os.path.join(workdir, "samples", "samples_0000006.png"))


def _teacher_net(workdir):
  """The `net` of the newest checkpoint in `workdir`, as saved."""
  manager = checkpoints.make_manager(workdir, keep=1, create=False)
  saved = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore())["net"]
  manager.close()
  return saved
