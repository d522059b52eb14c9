"""Texture synthesis, texture mapping and composition: the math against
independent computations, and the two modes run as a user runs them."""

import json
import os
import types

from helpers import conditional_gan_run
from helpers import shared_training
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from configs import compose as compose_config
from configs import texture as texture_config
from configs.common import default_config
from imgen import modes
from imgen.core import parallel
from imgen.core.errors import ConfigError
from imgen.data import sources
from imgen.data import textures
from imgen.data.spec import DataSpec
from imgen.evaluation import features as features_lib
from imgen.families.diffusion import DiffusionFamily
from imgen.methods import samplers
from imgen.methods import texture
from imgen.methods import texture_map
from imgen.models import sgan
from imgen.modes import compose
from imgen.modes import train


def test_gram_matches_numpy():
  f = np.random.default_rng(0).standard_normal((2, 5, 7, 3)).astype(np.float32)
  expected = np.stack([x.reshape(-1, 3).T @ x.reshape(-1, 3) / 35 for x in f.astype(np.float64)])
  np.testing.assert_allclose(texture.gram(jnp.asarray(f)), expected, rtol=1e-5)


def _toy_features(levels=2, sizes="3,5"):
  config = texture_config.random_features(seed=3, kernel_sizes=sizes, channels=8, levels=levels)
  return texture.RandomFeatures.create(config, 1, "test")


def test_random_features_are_valid_convolutions_with_pixels_and_a_constant():
  net = _toy_features(levels=1, sizes="3")
  x = np.random.default_rng(1).standard_normal((1, 12, 12, 1)).astype(np.float32)
  (f,) = net(jnp.asarray(x))
  k = np.asarray(net.kernels[0])[:, :, 0]  # (3, 3, 8)
  expected = np.zeros((10, 10, 8))
  for i in range(10):
    for j in range(10):
      expected[i, j] = np.einsum("ab,abc->c", x[0, i : i + 3, j : j + 3, 0], k)
  np.testing.assert_allclose(f[0, ..., :8], np.maximum(expected, 0), atol=1e-5)
  np.testing.assert_array_equal(f[0, ..., 8], x[0, 1:-1, 1:-1, 0])
  np.testing.assert_array_equal(f[0, ..., 9], 1.0)
  (periodic,) = net(jnp.asarray(x), periodic=True)  # Every pixel, the image as a torus.
  assert periodic.shape[1:3] == (12, 12)
  np.testing.assert_array_equal(periodic[0, 1:-1, 1:-1, :8], f[0, ..., :8])
  np.testing.assert_array_equal(periodic[0, ..., 8], x[0, ..., 0])
  corner = np.einsum("ab,abc->c", np.roll(x[0, ..., 0], (1, 1), axis=(0, 1))[:3, :3], k)
  np.testing.assert_allclose(periodic[0, 0, 0, :8], np.maximum(corner, 0), atol=1e-5)


def test_filters_of_two_sizes_see_the_same_centres():
  net = _toy_features(levels=2, sizes="3,5")
  x = np.random.default_rng(12).standard_normal((1, 20, 20, 1)).astype(np.float32)
  fine, coarse = net(jnp.asarray(x))
  assert fine.shape == (1, 16, 16, 18) and coarse.shape == (1, 6, 6, 18)
  k3, k5 = (np.asarray(k)[:, :, 0] for k in net.kernels)
  for i, j in ((0, 0), (7, 3), (15, 15)):  # Centre (i + 2, j + 2) for both filters.
    three = np.einsum("ab,abc->c", x[0, i + 1 : i + 4, j + 1 : j + 4, 0], k3)
    five = np.einsum("ab,abc->c", x[0, i : i + 5, j : j + 5, 0], k5)
    np.testing.assert_allclose(fine[0, i, j, :8], np.maximum(three, 0), atol=1e-5)
    np.testing.assert_allclose(fine[0, i, j, 8:16], np.maximum(five, 0), atol=1e-5)
    assert fine[0, i, j, 16] == x[0, i + 2, j + 2, 0]
  pooled = x[0].reshape(10, 2, 10, 2).mean(axis=(1, 3))  # Level 1: the 2x2 means.
  np.testing.assert_allclose(coarse[0, ..., 16], pooled[2:-2, 2:-2], atol=1e-6)
  with pytest.raises(ConfigError, match="odd sizes"):
    _toy_features(sizes="3,4")


@pytest.mark.parametrize("periodic", [False, True])
def test_lbfgs_lowers_the_loss_monotonically(periodic):
  rng = np.random.default_rng(2)
  exemplar = np.tanh(rng.standard_normal((32, 32, 1))).astype(np.float32)
  config = texture_config.texture_group()
  config.update(steps_per_scale=15, scales=1, periodic=periodic)
  x0 = jnp.asarray(0.1 * rng.standard_normal((1, 32, 32, 1)), jnp.float32)
  _, losses = texture.optimise(_toy_features(), x0, jnp.asarray(exemplar)[None], 15, config)
  assert losses[-1] < 0.2 * losses[0]
  assert np.all(np.diff(losses) <= 1e-7 * losses[0]), losses


def test_periodic_upsampling_is_resizing_on_the_torus():
  x = np.random.default_rng(13).standard_normal((1, 8, 6, 2)).astype(np.float32)
  up = np.asarray(texture.upsample_periodic(jnp.asarray(x)))
  tiled = np.asarray(jax.image.resize(np.tile(x, (1, 3, 3, 1)), (1, 48, 36, 2), "bilinear"))
  np.testing.assert_allclose(up, tiled[:, 16:32, 12:24], atol=1e-5)  # The middle tile.


def test_adam_lowers_the_loss_too():
  rng = np.random.default_rng(2)
  exemplar = np.tanh(rng.standard_normal((32, 32, 1))).astype(np.float32)
  config = texture_config.texture_group()
  config.update(optimizer="adam", learning_rate=0.05)
  x0 = jnp.asarray(0.1 * rng.standard_normal((1, 32, 32, 1)), jnp.float32)
  _, losses = texture.optimise(_toy_features(), x0, jnp.asarray(exemplar)[None], 30, config)
  assert losses[-1] < 0.5 * losses[0]


def test_scores_tell_the_texture_from_noise():
  net = _toy_features()
  rng = np.random.default_rng(4)
  stripes = np.tile(np.sin(np.arange(64) * 0.8)[None, :, None], (64, 1, 1)).astype(np.float32)
  noise = rng.standard_normal((64, 64, 1)).astype(np.float32) * stripes.std()
  assert texture.gram_distance(net, stripes, stripes) == 0
  assert texture.sifid(net, stripes[:, :32], stripes) < 0.1 * texture.sifid(net, noise, stripes)
  assert texture.gram_distance(net, stripes[:32], stripes) < 0.1 * texture.gram_distance(
    net, noise, stripes
  )


def test_seam_ratio():
  rng = np.random.default_rng(5)
  noise = rng.standard_normal((8, 96, 96))
  smooth = scipy.ndimage.gaussian_filter(noise, (0, 3, 3), mode="wrap")[..., None]
  assert 0.9 < texture.seam_ratio(smooth) < 1.1  # A torus: the wrap is one more neighbour.
  blocky = np.repeat(np.repeat(smooth[:, ::4, ::4], 4, 1), 4, 2)  # Constant in 4x4 blocks.
  assert 0.9 < texture.seam_ratio(blocky, 4) < 1.1  # Compared with the blocks' edges.
  assert texture.seam_ratio(blocky) > 3
  ramp = np.linspace(0, 1, 64)[None, :, None] * np.ones((64, 1, 1))
  assert texture.seam_ratio(ramp) > 20  # Jumps from 1 back to 0 at the wrap.


def _generator(padding, upsample="subpixel"):
  g = sgan.Generator(64, 1, (16, 8), noise_channels=4, padding=padding, upsample=upsample)
  z = jax.random.normal(jax.random.key(0), (2, 4, 4, 4))
  variables = g.init(jax.random.key(1), z, train=False)
  return lambda z: g.apply(variables, z, train=False), z


@pytest.mark.parametrize("upsample", ["subpixel", "nearest"])
def test_a_wrap_padded_generator_tiles_without_a_seam(upsample):
  apply, z = _generator("wrap", upsample)
  x = np.asarray(apply(z))
  assert x.shape == (2, 32, 32, 1)
  tiled = np.asarray(apply(jnp.tile(z, (1, 2, 2, 1))))  # Noise on a torus twice as big.
  np.testing.assert_allclose(tiled, np.tile(x, (1, 2, 2, 1)), atol=1e-5)
  shifted = np.asarray(apply(jnp.roll(z, 1, axis=2)))  # Equivariant on the torus.
  np.testing.assert_allclose(shifted, np.roll(x, 8, axis=2), atol=1e-5)
  zero, _ = _generator("zero", upsample)
  assert (
    np.abs(
      np.asarray(zero(jnp.tile(z, (1, 2, 2, 1)))) - np.tile(np.asarray(zero(z)), (1, 2, 2, 1))
    ).max()
    > 1e-3
  )


def test_distance_transform_matches_scipy():
  rng = np.random.default_rng(6)
  mask = scipy.ndimage.binary_opening(rng.uniform(size=(40, 50)) > 0.3)
  np.testing.assert_allclose(
    texture_map.distance_transform(jnp.asarray(mask)),
    scipy.ndimage.distance_transform_edt(mask),
    atol=1e-4,
  )


def test_the_identity_warp_returns_the_texture_and_mapping_keeps_the_background():
  rng = np.random.default_rng(7)
  tex = rng.uniform(-1, 1, (3, 24, 24, 3)).astype(np.float32)
  np.testing.assert_array_equal(
    texture_map.warp(jnp.asarray(tex[0]), texture_map.identity_coordinates(24, 24)), tex[0]
  )
  masks = np.zeros((3, 24, 24), bool)
  masks[:, 4:20, 6:18] = True
  backgrounds = rng.uniform(-1, 1, (3, 24, 24, 3)).astype(np.float32)
  key = jax.random.key(0)
  for kind in texture_map.WARPS:
    out = np.asarray(texture_map.map_texture(tex, masks, backgrounds, key, kind=kind))
    np.testing.assert_array_equal(out[~masks], backgrounds[~masks])
  plain = texture_map.map_texture(tex, masks, backgrounds, key, kind="identity", shade=False)
  np.testing.assert_array_equal(np.asarray(plain)[masks], tex[masks])


def test_poisson_blending_of_an_image_into_itself_is_the_identity_and_solves_the_equation():
  rng = np.random.default_rng(8)
  target = rng.uniform(-1, 1, (20, 24, 3)).astype(np.float32)
  source = rng.uniform(-1, 1, (20, 24, 3)).astype(np.float32)
  region = np.zeros((20, 24), bool)
  region[3:15, 0:10] = True  # Touches the image's edge.
  region[8:18, 14:20] = True
  for mixed in (False, True):
    same = compose.poisson_blend(
      jnp.asarray(target), jnp.asarray(target), jnp.asarray(region), mixed
    )
    np.testing.assert_allclose(same, target, atol=1e-5)
  for mixed in (False, True):
    f = np.asarray(
      compose.poisson_blend(*map(jnp.asarray, (target, source, region)), mixed), np.float64
    )
    np.testing.assert_array_equal(f[~region], target[~region])
    for y, x in zip(*np.nonzero(region), strict=True):  # Perez et al.'s Eq. 7 at every pixel.
      lhs = rhs = 0.0
      for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        if 0 <= y + dy < 20 and 0 <= x + dx < 24:
          lhs = lhs + f[y, x] - f[y + dy, x + dx]
          v = source[y, x] - source[y + dy, x + dx]
          w = target[y, x] - target[y + dy, x + dx]
          rhs = rhs + (np.where(np.abs(w) > np.abs(v), w, v) if mixed else v)  # Their Eq. 13.
      np.testing.assert_allclose(lhs, rhs, atol=2e-4)


def test_render_draws_what_the_layout_says():
  rng = np.random.default_rng(9)
  layout = compose.draw_layout(rng, 12, 2, None)
  backgrounds = rng.integers(0, 256, (12, 64, 64, 3)).astype(np.uint8)
  mattes = np.zeros((12, 4, 28, 28), np.float32)
  mattes[:, :, 6:22, 10:18] = 1.0  # A bar in each slot.
  composed, masks = compose.render(backgrounds, mattes, layout, rng)
  expected = np.zeros_like(masks)
  for i in range(12):
    for k in np.flatnonzero(layout.digits[i] >= 0):
      top, left, side, _ = layout.boxes[i, k]
      ink = compose._resize(mattes[i, k], side) > 0.5  # noqa: SLF001
      expected[i, top : top + side, left : left + side][ink] = 1 + layout.digits[i, k]
      last = masks[i] == 1 + layout.digits[i, k]  # Its visible ink, if its class is unique.
      if last.any() and (layout.digits[i] == layout.digits[i, k]).sum() == 1:
        np.testing.assert_array_equal(
          composed["paste"][i][last], np.broadcast_to(layout.colours[i, k], (last.sum(), 3))
        )
  np.testing.assert_array_equal(masks, expected)
  assert set(np.unique(layout.digits)) - {-1} <= set(range(10))
  np.testing.assert_array_equal(composed["paste"][masks == 0], backgrounds[masks == 0])
  three_seven = compose.draw_layout(rng, 5, 1, compose._classes("3,7"))  # noqa: SLF001
  np.testing.assert_array_equal(three_seven.digits[:, :2], [[3, 7]] * 5)


def test_texture_crops_of_a_file_and_bad_exemplars(tmp_path):
  from PIL import Image

  image = np.random.default_rng(10).integers(0, 256, (160, 140, 3)).astype(np.uint8)
  Image.fromarray(image).save(tmp_path / "mine.png")
  builder = sources.get_builder(f"texture_crops/{tmp_path / 'mine.png'}", str(tmp_path / "tfds"))
  crop = builder.as_data_source("train")[0]["image"]
  scaled = textures.load_exemplar(str(tmp_path / "mine.png"), textures.EXEMPLAR_SCALE)
  assert crop.shape == (64, 64, 3) and scaled.shape == (80, 70, 3)
  windows = np.lib.stride_tricks.sliding_window_view(scaled, (64, 64, 3))[..., 0, :, :, :]
  assert (windows == crop).all(axis=(-3, -2, -1)).any()  # A crop of the exemplar.
  with pytest.raises(Exception, match="neither bundled"):
    sources.get_builder("texture_crops/no/such.png", str(tmp_path / "tfds"))


@pytest.fixture(scope="session")
def texture_run(data_dir):
  """The spatial GAN's smoke run (shared by the workers)."""
  config = texture_config.get_config("smoke")
  config.data.data_dir = data_dir
  return config, shared_training("texture", config)[0]


def test_texture_mode_writes_scores_and_the_grid(texture_run):
  config, workdir = texture_run
  record = modes.run("texture", config, workdir)
  out = os.path.join(workdir, "texture", "brick")
  for name in ("grid.png", "optimised.png", "generated.png", "tiling.png", "textures.npz"):
    assert os.path.isfile(os.path.join(out, name)), name
  with open(os.path.join(out, "scores.json")) as f:
    assert json.load(f)["scores"] == json.loads(json.dumps(record["scores"]))
  s = record["scores"]
  losses = np.load(os.path.join(out, "textures.npz"))["losses"]
  assert losses.shape == (2, 6) and (losses[:, -1] < losses[:, 0]).all()  # 2 scales of 5 steps.
  assert record["optimiser"]["losses"] == losses[:, [0, -1]].tolist()
  assert s["optimised"]["gram_distance"] < s["noise"]["gram_distance"]
  assert 0.6 < record["generated_seam_ratio"] < 1.6  # Wrap-padded: no seam.
  assert set(record["generator_images_per_second"]) == {"64x64_batch1", "64x64_batch8"}


def test_sdedit_follows_the_exact_ode_of_gaussian_data_from_the_noised_image(monkeypatch):
  """Data N(m, s^2) per pixel has the exact denoiser D(x, sigma) = m + s^2 / (s^2 + sigma^2)
  (x - m), whose probability-flow ODE from x at sigma0 ends at m + (x - m) s / sqrt(s^2 +
  sigma0^2). SDEdit from image y at sigma0, by the Euler sampler over 300 levels, must so
  give samples of mean m + (y - m) k and std sigma0 k, k = s / sqrt(s^2 + sigma0^2)."""
  m, s, sigma0 = 0.2, 0.3, 0.8
  config = default_config("diffusion", "smoke")
  config.sample.update(sampler="euler", steps=300, clip=False)
  family = DiffusionFamily(config, DataSpec.of_images(28, 1))
  exact = lambda params, labels, guidance=1.0, clip=False: (
    lambda x, sigma: m + (s**2 / (s**2 + sigma[:, None, None, None] ** 2)) * (x - m)
  )
  monkeypatch.setattr(family, "denoiser", exact)
  state = types.SimpleNamespace(net=types.SimpleNamespace(eval_params=None))
  y = jnp.broadcast_to(jnp.linspace(-1.0, 1.0, 28)[None, :, None, None], (64, 28, 28, 1))
  edit = jax.pmap(
    lambda y: family.edit(state, jax.random.key(0), y, sigma0), axis_name=parallel.AXIS
  )
  out = np.asarray(edit(y[None]))[0]
  k = s / np.sqrt(s**2 + sigma0**2)
  np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), m + (y[0, :, 0, 0] - m) * k, atol=0.02)
  np.testing.assert_allclose(out.std(axis=(0, 2, 3)), sigma0 * k, rtol=0.05)
  sigmas = samplers.levels_below(np.array([20.0, 3.0, 0.5, 0.1, 0.0]), 0.8, "sigma")
  np.testing.assert_array_equal(sigmas, [0.8, 0.5, 0.1, 0.0])
  with pytest.raises(ConfigError, match="sigma=30"):
    samplers.levels_below(np.array([20.0, 0.0]), 30.0, "sigma")


def test_compose_mode_scores_every_blend(texture_run, smoke_run, data_dir, tmp_path):
  digits_dir = conditional_gan_run(data_dir)[0]
  scene_model = default_config("diffusion_scenes", "smoke")
  scene_model.data.data_dir = data_dir
  scene_model.eval.update(every_steps=0, sample_every=0)  # Compose samples from it itself.
  scene_dir = str(tmp_path / "scenes")
  train.train_and_evaluate(scene_model, scene_dir)
  config = compose_config.get_config("smoke")
  config.compose.update(
    texture_workdirs=texture_run[1],
    digits_workdir=digits_dir,
    segment_workdir=smoke_run("segment")[1],
    scene_workdir=scene_dir,
  )
  record = modes.run("compose", config, str(tmp_path / "out"))
  assert set(record["results"]) == {"real_test", "real_train", *compose.BLENDS, "sdedit"}
  for blend in (*compose.BLENDS, "sdedit"):
    assert 0 <= record["results"][blend]["miou"] <= 1
    assert np.isfinite(record["results"][blend]["fid"])
  saved = np.load(tmp_path / "out" / "compose" / "scenes.npz")
  assert saved["images_poisson"].shape == (16, 64, 64, 3) and saved["digits"].shape == (16, 4)
  assert saved["images_sdedit"].shape == (16, 64, 64, 3)
  assert os.path.isfile(tmp_path / "out" / "compose" / "blends.png")
  config.compose.sdedit_sigma = 30.0  # Both fail before a scene is drawn.
  with pytest.raises(ConfigError, match=r"compose.sdedit_sigma=30.0; it must lie in \(0, 20\]"):
    modes.run("compose", config, str(tmp_path / "out3"))
  config.compose.scene_workdir = digits_dir  # Not a diffusion model of colour scenes.
  with pytest.raises(ConfigError, match="unconditional diffusion model of 64x64"):
    modes.run("compose", config, str(tmp_path / "out3"))
  config.compose.scene_workdir = ""
  config.compose.digits_workdir = texture_run[1]  # Not a conditional generator.
  with pytest.raises(Exception, match="class-conditional"):
    modes.run("compose", config, str(tmp_path / "out2"))


def test_the_trained_classifier_serves_as_the_feature_network(cnn_workdir):
  config = texture_config.texture_group()
  config.update(network="cnn", steps_per_scale=8, scales=2)
  features = texture.make_features(config, 1, lambda: features_lib.trained_cnn(cnn_workdir))
  levels = features(jnp.zeros((1, 40, 40, 1)), None)
  assert [f.shape[-1] for f in levels] == [4, 8]  # The smoke CNN's two blocks (width 4).
  exemplar = np.tanh(np.random.default_rng(11).standard_normal((32, 32, 1))).astype(np.float32)
  image, history = texture.synthesize(features, exemplar, 32, config, jax.random.key(0))
  assert image.shape == (32, 32, 1)
  assert all(h[-1] < h[0] for h in history)  # At every scale.
