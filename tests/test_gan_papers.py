"""The GAN papers' configs: their networks' parameter counts against the papers' tables
(counted by formula from the layers), their optimizers and schedules, and a few steps of
each on a CIFAR-shaped mock."""

import os

from helpers import mock_cifar10
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import sngan_cifar10
from configs import sngan_projection_cifar10
from configs import sngan_stl10
from configs import wgan_gp_cifar10
from imgen.core.errors import ConfigError
from imgen.data import DataSpec
from imgen.families import gan
from imgen.modes import train


def _count(shapes):
  return int(sum(np.prod(s) for s in shapes))


def _resnet_counts(z, base, g, d, down, classes=None, d_bias=False):
  """Parameters of the SNGAN ResNet counted from its table: G's dense layer,
  up blocks (two BN, two 3x3 convs, a 1x1 shortcut), BN and output conv; D's
  blocks (the first optimised) with a 1x1 shortcut where the width or size
  changes, and the dense layer (and the class embedding)."""
  bn = lambda c: 2 * c * (classes or 1)
  conv = lambda k, cin, cout: k * k * cin * cout + cout
  g_total = z * base * base * g[0] + base * base * g[0]
  for cin, cout in zip(g[:-1], g[1:], strict=True):
    g_total += bn(cin) + conv(3, cin, cout) + bn(cout) + conv(3, cout, cout) + conv(1, cin, cout)
  g_total += 2 * g[-1] + conv(3, g[-1], 3)
  d_total, cin = 0, 3
  for i, (cout, pooled) in enumerate(zip(d, down, strict=True)):
    hidden = cout if i == 0 else cin
    d_total += conv(3, cin, hidden) + conv(3, hidden, cout)
    if i == 0 or pooled or cin != cout:
      d_total += conv(1, cin, cout)
    cin = cout
  d_total += d[-1] + int(d_bias) + (classes or 0) * d[-1]
  return g_total, d_total


PAPER_CONFIGS = {
  # Table 4 (CIFAR-10) and Table 5 (STL-10) of the SNGAN paper.
  "sngan_cifar10": (sngan_cifar10, 32, _resnet_counts(128, 4, [256] * 4, [128] * 4, [1, 1, 0, 0])),
  "sngan_stl10": (
    sngan_stl10,
    48,
    _resnet_counts(128, 6, [512, 256, 128, 64], [64, 128, 256, 512, 1024], [1, 1, 1, 1, 0]),
  ),
  "sngan_projection_cifar10": (
    sngan_projection_cifar10,
    32,
    _resnet_counts(128, 4, [256] * 4, [128] * 4, [1, 1, 0, 0], classes=10),
  ),
  "wgan_gp_cifar10": (
    wgan_gp_cifar10,
    32,
    _resnet_counts(128, 4, [128] * 4, [128] * 4, [1, 1, 0, 0], d_bias=True),
  ),
}


def test_sngan_tables_count_what_the_papers_networks_have():
  # Independent of the formula: SNGAN's CIFAR-10 G and D as often quoted (4.3M, 1.05M).
  assert PAPER_CONFIGS["sngan_cifar10"][2] == (4_276_739, 1_053_824)


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_networks_match_their_tables(name):
  module, size, (g_expected, d_expected) = PAPER_CONFIGS[name]
  config = module.get_config()
  spec = DataSpec.of_images(size, 3, num_classes=10)
  family = gan.GANFamily(config, spec)
  state = jax.eval_shape(family.init_state, jax.random.key(0))
  count = lambda tree: _count(x.shape for x in jax.tree.leaves(tree))
  assert (count(state.g.params), count(state.d.params)) == (g_expected, d_expected)
  z = jnp.zeros((2, config.model.latent_dim))
  labels = (jnp.zeros(2, jnp.int32),) if config.model.conditional else ()
  images = jax.eval_shape(
    lambda s: family.generator.apply(s.g.variables(), z, *labels, train=False), state
  )
  assert images.shape == (2, size, size, 3)
  if config.model.spectral_norm:  # Every D layer carries its power-iteration vector.
    vectors = [
      k for k in jax.tree_util.tree_leaves_with_path(state.d.batch_stats) if "/u" in str(k[0])
    ]
    kernels = [
      k
      for k in jax.tree_util.tree_leaves_with_path(state.d.params)
      if "kernel" in str(k[0]) or "embedding" in str(k[0])
    ]
    assert len(vectors) == len(kernels) > 0


@pytest.mark.parametrize("name", ["sngan_cifar10", "wgan_gp_cifar10"])
def test_paper_configs_train_on_a_cifar_shaped_mock(tmp_path, name):
  """A few steps of the paper config (networks shrunk) through the trainer, on
  tfds.testing's mock CIFAR-10 (CIFAR-10 cannot be downloaded here)."""
  config = PAPER_CONFIGS[name][0].get_config("smoke")
  assert config.data.name == "cifar10" and config.model.image_size == 32
  with mock_cifar10():
    metrics = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(metrics["d_loss"]) and np.isfinite(metrics["g_loss"])
  assert os.path.exists(os.path.join(str(tmp_path), "samples", "samples_0000006.png"))


def test_the_paper_optimizer_and_schedule(data_dir):
  config = sngan_cifar10.get_config()
  assert config.objective.n_dis == 5 and config.objective.loss == "hinge"
  assert (config.optim.g.b1, config.optim.g.b2, config.optim.d.learning_rate) == (0.0, 0.9, 2e-4)
  family = gan.GANFamily(config, DataSpec.of_images(32, 3))
  assert family.batches_per_step == 5
  rate = family.d_optimizer.learning_rate
  np.testing.assert_allclose([rate(0), rate(50_000), rate(100_000)], [2e-4, 1e-4, 0.0], atol=1e-12)
  with pytest.raises(ConfigError, match="conditional=True needs class labels"):
    gan.GANFamily(sngan_projection_cifar10.get_config(), DataSpec.of_images(32, 3))
