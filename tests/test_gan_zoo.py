"""The GAN zoo: losses, gradient penalties, spectral norm, DiffAugment, the
projection discriminator, conditional sampling, resume and device equivalence
of the new objectives, and the offline configs of the digits. The papers' configs:
tests/test_gan_papers.py."""

import os

import flax.linen as nn
from helpers import assert_trees_equal
from helpers import conditional_gan_run
from helpers import four_and_one_replicas
from helpers import nothing_compiled
from helpers import override
from helpers import saved_state
from helpers import shared_training
from helpers import smoke_config
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gan_conditional
from configs import gan_r1
from imgen import modes
from imgen.core import parallel
from imgen.core.errors import UserError
from imgen.data import DataSpec
from imgen.evaluation.experiment import Experiment
from imgen.families import gan
from imgen.methods import augment
from imgen.methods import gan_losses
from imgen.models import dcgan
from imgen.models.gan_layers import spectral
from imgen.modes import train


def test_hinge_and_wasserstein_losses_on_known_logits():
  real, fake = jnp.array([2.0, 0.5, -1.0]), jnp.array([-3.0, 0.0])
  # max(0, 1 - r): 0, 0.5, 2 -> 2.5/3; max(0, 1 + f): 0, 1 -> 0.5.
  np.testing.assert_allclose(gan_losses.hinge_d(real, fake), 2.5 / 3 + 0.5, rtol=1e-6)
  np.testing.assert_allclose(gan_losses.wasserstein_d(real, fake), -1.5 - 0.5, rtol=1e-6)
  np.testing.assert_allclose(gan_losses.critic_g(fake), 1.5, rtol=1e-6)


def test_top_k_keeps_the_fakes_d_finds_most_real_in_the_global_batch():
  # Four replicas of three fakes: the global batch's top 5 are 9, 8, 7, 6, 5.
  logits = jnp.array([[9.0, 0.0, 1.0], [8.0, 2.0, 7.0], [3.0, 6.0, 4.0], [5.0, -1.0, -2.0]])
  weights = jax.vmap(lambda x: gan_losses.top_k_weights(x, jnp.int32(5)), axis_name=parallel.AXIS)(
    logits
  )
  # G's gradients are averaged over the 4 replicas: each kept fake weighs 4/5 here, 1/5 overall.
  expected = np.where(np.asarray(logits) >= 5.0, 4 / 5, 0.0)
  np.testing.assert_allclose(weights, expected, rtol=1e-6)
  per_replica = jax.vmap(lambda x, w: gan_losses.critic_g(x, w), axis_name=parallel.AXIS)(
    logits, weights
  )
  np.testing.assert_allclose(np.mean(per_replica), -(9 + 8 + 7 + 6 + 5) / 5, rtol=1e-6)
  o = smoke_config("gan", None).objective
  o.update(topk_min=0.5, topk_decay=0.9, topk_every=10)
  counts = [int(gan_losses.top_k_count(jnp.int32(s), 64, o)) for s in (0, 9, 10, 25, 1000)]
  assert counts == [64, 64, 57, 51, 32]  # floor(64 * 0.9**(s // 10)), at least 32.


def _critic_numpy(x, a, w):
  """D(x) = w . tanh(A x) per row, in float64."""
  return np.tanh(x.reshape(len(x), -1) @ a.T) @ w


def test_gradient_penalties_match_finite_differences():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 3, 3, 2))
  a, w = rng.normal(size=(5, 18)) * 0.3, rng.normal(size=5)
  critic = lambda x: jnp.tanh(x.reshape(len(x), -1) @ a.T.astype(np.float32)) @ w.astype(np.float32)
  grads = np.zeros((4, 18))
  eps = 1e-6
  for j in range(18):
    step = np.zeros(18)
    step[j] = eps
    up = _critic_numpy(x + step.reshape(3, 3, 2), a, w)
    down = _critic_numpy(x - step.reshape(3, 3, 2), a, w)
    grads[:, j] = (up - down) / (2 * eps)
  norms = np.linalg.norm(grads, axis=1)
  x32 = jnp.asarray(x, jnp.float32)
  np.testing.assert_allclose(
    gan_losses.gradient_penalty(critic, x32), np.mean((norms - 1) ** 2), rtol=1e-4
  )
  np.testing.assert_allclose(gan_losses.r1_penalty(critic, x32), np.mean(norms**2), rtol=1e-4)


def test_spectral_norm_estimate_matches_the_largest_singular_value():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train):
      return spectral(nn.Conv(6, (3, 3)), True, train)(x)

  net, x = Net(), jnp.ones((1, 5, 5, 4))
  variables = net.init(jax.random.key(0), x, False)
  kernel = np.asarray(variables["params"]["Conv_0"]["kernel"])
  for _ in range(100):  # One power iteration per training call.
    _, updates = net.apply(variables, x, True, mutable=["batch_stats"])
    variables = {**variables, **updates}
  stats = variables["batch_stats"]["SpectralNorm_0"]
  top = np.linalg.svd(kernel.reshape(-1, 6), compute_uv=False)[0]
  np.testing.assert_allclose(stats["Conv_0/kernel/sigma"], top, rtol=1e-4)
  # The layer's effective kernel has spectral norm 1: its output is the plain
  # convolution's divided by sigma.
  plain = nn.Conv(6, (3, 3)).apply({"params": variables["params"]["Conv_0"]}, x)
  normalised = net.apply(variables, x, False)
  np.testing.assert_allclose(normalised, plain / top, rtol=1e-3, atol=1e-5)


def test_translation_and_cutout_are_what_they_say():
  x = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.0, (6, 16, 16, 1)), jnp.float32)
  key = jax.random.key(3)
  moved = jax.pmap(lambda x: augment.translation(x, key), axis_name="batch")(x[None])[0]
  for image, out in zip(np.asarray(x), np.asarray(moved), strict=True):
    # Some shift (dy, dx) within 1/8 of the size, zeros filling in, matches.
    matches = []
    for dy in range(-2, 3):
      for dx in range(-2, 3):
        padded = np.pad(image, ((2, 2), (2, 2), (0, 0)))
        expected = padded[2 - dy : 18 - dy, 2 - dx : 18 - dx]
        matches.append(np.array_equal(expected, out))
    assert sum(matches) == 1
  cut = jax.pmap(lambda x: augment.cutout(x, key), axis_name="batch")(x[None])[0]
  zeros = np.sum(np.asarray(cut) == 0, axis=(1, 2, 3))
  assert np.all(zeros <= 64) and np.all(zeros >= 32), (
    zeros
  )  # An 8x8 square, clipped at most by half.
  # Differentiable: the gradient passes where the image is kept.
  grad = jax.grad(lambda x: jnp.sum(augment.color(x, key) ** 2))
  assert np.all(np.isfinite(jax.pmap(grad, axis_name="batch")(x[None])))


def test_projection_discriminator_depends_on_the_label():
  d = dcgan.Discriminator(16, width=8, norm="none", spectral_norm=True, num_classes=10)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 1)), jnp.float32)
  variables = d.init(jax.random.key(0), x, jnp.zeros(2, jnp.int32), train=False)
  logits = [d.apply(variables, x, jnp.full(2, c), train=False) for c in (0, 1)]
  assert not np.allclose(logits[0], logits[1])


def test_ema_samples_use_standing_statistics_of_the_ema_weights(data_dir):
  config = smoke_config("gan", data_dir)
  config.optim.g.ema_decay = 0.9
  family = gan.GANFamily(config, DataSpec.of_images(28, 1))
  state = family.init_state(jax.random.key(0))
  ema = jax.tree.map(lambda p: 3.0 * p, state.g.params)  # Weights unlike the trained ones.
  state = state.replace(g=state.g.replace(ema_params=ema))
  pmapped = lambda f: jax.pmap(f, axis_name=parallel.AXIS)
  n = 8
  stats = pmapped(lambda s: family.standing_statistics(s.g.ema_params, s.g.batch_stats, n))(
    parallel.replicate(state)
  )
  z = np.asarray(pmapped(lambda _: family.standing_batch(n)[0])(jnp.zeros(1)))[0]
  assert z.shape == (gan.STANDING_SAMPLES, config.model.latent_dim)
  # G's first BatchNorm normalises its dense layer's output, z @ W: its
  # statistics, computed by hand over the standing batch.
  kernel = np.asarray(ema["Dense_0"]["kernel"], np.float64)
  first = (z.astype(np.float64) @ kernel).reshape(len(z), -1, kernel.shape[1] // 49)
  first = first.reshape(-1, first.shape[-1])
  norm = jax.tree.map(lambda x: np.asarray(x)[0], stats)["_Norm_0"]["BatchNorm_0"]
  np.testing.assert_allclose(norm["mean"], first.mean(0), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(norm["var"], first.var(0), rtol=1e-4)
  # The samples use them: what G gives with those statistics, not the running ones.
  key = jax.random.key(1)
  samples = pmapped(lambda s: family.generate(s, key, n))(parallel.replicate(state))[0]
  variables = {"params": ema, "batch_stats": jax.tree.map(lambda x: x[0], stats)}
  z_key = np.asarray(pmapped(lambda _: parallel.global_normal(key, n, (16,)))(jnp.zeros(1)))[0]
  expected = family.generator.apply(variables, z_key, None, train=False)
  np.testing.assert_allclose(samples, expected, atol=1e-6)
  running = family.generator.apply(state.g.variables(), z_key, None, train=False)
  assert np.abs(np.asarray(running) - np.asarray(samples)).max() > 0.1


# A GAN with every new piece: the ResNet networks, spectral norm, conditioning,
# hinge loss with R1 on every other image, DiffAugment, top-k and EMA; and WGAN-GP
# with a LayerNorm DCGAN critic and two critic steps (one program with both pieces
# compiled ~15% slower: tests/test_gan_zoo.py's share of the suite).
VARIANTS = {
  "resnet_hinge": [
    "--config.model.name=resnet",
    "--config.model.spectral_norm=true",
    "--config.model.conditional=true",
    "--config.objective.loss=hinge",
    "--config.objective.r1_gamma=0.1",
    "--config.objective.r1_subsample=2",
    "--config.objective.diffaugment=color,translation,cutout",
    "--config.objective.topk_min=0.5",
    "--config.objective.topk_every=2",
    "--config.optim.g.ema_decay=0.9",
    # The biases of G's block convolutions feed BatchNorm, which removes them:
    # their exact gradient is 0, and with Adam's eps of 1e-8 the rounding
    # noise in its place moves them by up to the learning rate per step, in
    # directions that differ with the device count. A larger eps keeps that
    # noise from being amplified, so the states can be compared.
    "--config.optim.g.eps=0.001",
  ],
  "wgan_gp": [
    "--config.model.d_norm=layer",
    "--config.objective.loss=wgan_gp",
    "--config.objective.n_dis=2",
  ],
}


def _variant_config(name, data_dir, **train_overrides):
  """Evaluation off while training (0): the runs compare states, and the modes test evaluates."""
  config = smoke_config("gan", data_dir, **train_overrides)
  for flag in VARIANTS[name]:
    override(config, flag)
  config.eval.update(every_steps=0, sample_every=0)
  return config


@pytest.fixture(scope="session")
def variant_runs(data_dir):
  """One straight 6-step run per variant, on one device (shared by the workers)."""
  return {
    name: shared_training(f"gan-{name}", _variant_config(name, data_dir))[0] for name in VARIANTS
  }


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_new_objectives_resume_bitwise(variant_runs, data_dir, tmp_path, name):
  workdir = str(tmp_path / "resumed")
  train.train_and_evaluate(_variant_config(name, data_dir, num_steps=3), workdir)
  train.train_and_evaluate(_variant_config(name, data_dir), workdir)  # Resumes at 3.
  assert_trees_equal(saved_state(workdir)[0], saved_state(variant_runs[name])[0])


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_new_objectives_on_four_devices(data_dir, tmp_path, name):
  """Two steps on 4 replicas against 1 (tests/replicas.py): two critic steps on
  their own batches, R1 on a subsample, top-k over the global batch, DiffAugment
  and spectral norm's power iteration give what one device gives."""
  four, one = four_and_one_replicas("gan", data_dir, str(tmp_path / "four.npz"), *VARIANTS[name])
  for path in one:
    # Parameters, EMA, BatchNorm statistics and power-iteration vectors. Adam's
    # moments are left out: they hold raw gradients of 2 images per device,
    # where a ReLU within rounding of its kink moves them by ~1%.
    if "opt_state" not in path:
      np.testing.assert_allclose(four[path], one[path], rtol=1e-3, atol=1e-4, err_msg=path)


def test_conditional_samples_one_class_per_row(variant_runs, data_dir, cnn_workdir):
  config = _variant_config("resnet_hinge", data_dir)
  config.eval.update(classes="3,5", num_samples=32, metrics="fid", cnn_workdir=cnn_workdir)
  out = modes.run("sample", config, variant_runs["resnet_hinge"])["folder"]
  with np.load(os.path.join(out, "samples.npz")) as f:
    labels, images = f["labels"], f["images"]
  assert images.shape == (32, 28, 28, 1)
  np.testing.assert_array_equal(labels[:16], [3] * 8 + [5] * 8)  # Rows of 8: 3, 5, 3, 5.
  assert sorted(os.listdir(out))[:3] == ["record.json", "samples.npz", "samples_000.png"]
  record = modes.run("eval", config, variant_runs["resnet_hinge"])
  accuracy = record["results"]["test/cond_accuracy"]
  assert 0.0 <= accuracy <= 1.0


@pytest.mark.parametrize(
  "overrides,message",
  [
    (["--config.objective.loss=wgan_gp"], "BatchNorm in D mixes the batch"),
    (["--config.objective.r1_gamma=1"], "The R1 gradient penalty needs"),
    (["--config.objective.loss=lsgan"], "objective.loss 'lsgan' is unknown"),
    (["--config.eval.classes=3", "--mode=sample"], "this model is unconditional"),
    (["--config.model.conditional=true", "--config.eval.classes=12"], "the classes are 0..9"),
    (["--config.objective.diffaugment=flip"], "objective.diffaugment='flip' names ['flip']"),
    (["--config.objective.topk_min=0.0"], "objective.topk_min=0.0, topk_decay=0.99"),
    (
      [
        "--config.model.d_norm=none",
        "--config.objective.r1_gamma=1",
        "--config.objective.r1_subsample=3",
      ],
      "objective.r1_subsample=3 must divide the batch of each device (8)",
    ),
    (["--config.model.name=resnet", "--config.model.image_size=30"], "not a multiple of 2**2"),
  ],
)
def test_bad_gan_configs_fail_before_compiling(smoke_run, data_dir, tmp_path, overrides, message):
  """Through `modes.run`, as main.py runs it: a UserError before any device program ran."""
  mode, workdir = "train", str(tmp_path / "bad")
  if "--mode=sample" in overrides:
    mode, workdir = "sample", smoke_run("gan")[1]  # A trained unconditional GAN.
  config = smoke_config("gan", data_dir)
  for flag in overrides:
    if flag.startswith("--config."):
      override(config, flag)
  with nothing_compiled(), pytest.raises(UserError) as error:
    modes.run(mode, config, workdir)
  assert message in str(error.value)


def test_critic_steps_take_their_own_batches(data_dir):
  """With n_dis=k, train step s gets data batches k*s .. k*s + k - 1."""
  config = _variant_config("wgan_gp", data_dir)
  experiment = Experiment.create(config)
  grouped = next(experiment.train_batches(start_step=2))["image"]
  config.objective.n_dis = 1
  plain = Experiment.create(config).train_batches(start_step=4)
  expected = [next(plain)["image"] for _ in range(2)]
  assert grouped.shape[1] == 2
  np.testing.assert_array_equal(grouped[:, 0], expected[0])
  np.testing.assert_array_equal(grouped[:, 1], expected[1])


@pytest.mark.parametrize("module", [gan_r1, gan_conditional], ids=["gan_r1", "gan_conditional"])
def test_offline_configs_build_on_the_digits(module):
  """The measured configs as a user runs them: a valid GAN of the embedded
  digits whose R1 subsample divides the batch on 1, 2 and 4 devices."""
  config = module.get_config()
  assert config.data.name == "embedded_mnist" and config.optim.g.ema_decay > 0
  family = gan.GANFamily(config, DataSpec.of_images(28, 1, num_classes=10))
  assert (family.num_classes is not None) == config.model.conditional
  for devices in (1, 2, 4):
    assert (config.train.batch_size // devices) % config.objective.r1_subsample == 0


def test_the_conditional_offline_config_trains_and_writes_grids(data_dir):
  config = gan_conditional.get_config("smoke")
  assert config.model.conditional and config.objective.r1_gamma > 0
  workdir, metrics = conditional_gan_run(data_dir)
  assert np.isfinite(metrics["d_loss"]) and np.isfinite(metrics["r1"])
  samples = os.listdir(os.path.join(workdir, "samples"))
  assert samples and all(name.endswith(".png") for name in samples)
