"""DDPM as published (Ho et al. 2020): the U-Net's layout and parameter count against
a count by hand from the paper's layers, the paper config's settings, and a few steps of
that config on a CIFAR-shaped mock."""

import math
import os

from helpers import diffusion_family
from helpers import mock_cifar10
import jax
import jax.numpy as jnp
import numpy as np

from configs import ddpm_cifar10
from configs import diffusion as diffusion_config
from imgen.data.spec import DataSpec
from imgen.families.diffusion import DiffusionFamily
from imgen.models import unet
from imgen.modes import train


def _by_hand_unet_count(ch, mults, blocks, attn_levels, image_channels, size) -> int:
  """Parameters of DDPM's U-Net counted from its layers (Ho et al. Appendix B)."""
  conv = lambda i, o: 9 * i * o + o
  dense = lambda i, o: i * o + o
  norm = lambda c: 2 * c
  emb = 4 * ch

  def res(i, o):
    return (
      norm(i) + conv(i, o) + dense(emb, o) + norm(o) + conv(o, o) + (dense(i, o) if i != o else 0)
    )

  attn = lambda c: norm(c) + 4 * dense(c, c)
  total = dense(ch, emb) + dense(emb, emb) + conv(image_channels, ch)
  widths, c, res_size = [ch], ch, size
  for level, m in enumerate(mults):
    for _ in range(blocks):
      total += res(c, ch * m) + (attn(ch * m) if res_size in attn_levels else 0)
      c = ch * m
      widths.append(c)
    if level != len(mults) - 1:
      total += conv(c, c)
      widths.append(c)
      res_size //= 2
  total += 2 * res(c, c) + attn(c)
  for level, m in reversed(list(enumerate(mults))):
    for _ in range(blocks + 1):
      total += res(c + widths.pop(), ch * m) + (attn(ch * m) if res_size in attn_levels else 0)
      c = ch * m
    if level != 0:
      total += conv(c, c)
      res_size *= 2
  return total + norm(c) + conv(c, image_channels)


def test_the_paper_config_has_the_papers_network_and_settings():
  config = ddpm_cifar10.get_config()
  m = config.model
  assert (m.channels, tuple(m.channel_mults), m.num_res_blocks, m.dropout) == (
    128,
    (1, 2, 2, 2),
    2,
    0.1,
  )
  family = DiffusionFamily(config, DataSpec.of_images(32, 3))
  shapes = jax.eval_shape(family.init_state, jax.random.key(0)).net.params
  count = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
  assert count == _by_hand_unet_count(128, (1, 2, 2, 2), 2, (16,), 3, 32) == 35_746_307  # "35.7M"
  assert _by_hand_unet_count(32, (1, 2, 2), 1, (7,), 1, 28) == sum(
    math.prod(x.shape)
    for x in jax.tree.leaves(
      jax.eval_shape(
        diffusion_family(
          diffusion_config,
          channels=32,
          channel_mults=(1, 2, 2),
          num_res_blocks=1,
          attention_resolutions=(7,),
          norm_groups=8,
        )[1].init_state,
        jax.random.key(0),
      ).net.params
    )
  )
  assert (config.diffusion.schedule, config.diffusion.num_steps, config.diffusion.variance) == (
    "linear",
    1000,
    "large",
  )
  o = config.optim
  assert (o.learning_rate, o.warmup_steps, o.clip_norm, o.ema_decay, config.train.batch_size) == (
    2e-4,
    5000,
    1.0,
    0.9999,
    128,
  )
  rate = family.optimizer.learning_rate
  np.testing.assert_allclose(
    [rate(0), rate(2500), rate(5000), rate(700_000)], [0, 1e-4, 2e-4, 2e-4], atol=1e-12
  )


def test_the_paper_config_trains_on_a_cifar_shaped_mock(tmp_path):
  """A few steps of the paper config (network shrunk) through the trainer, on
  tfds.testing's mock CIFAR-10 (CIFAR-10 cannot be downloaded here)."""
  config = ddpm_cifar10.get_config("smoke")
  assert config.data.name == "cifar10" and config.model.image_size == 32
  config.train.update(num_steps=3)  # One save, one evaluation and one grid, at the end.
  with mock_cifar10():
    metrics = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["test/bits_per_dim"])
  assert os.path.exists(os.path.join(str(tmp_path), "samples", "samples_0000003.png"))


def test_the_unet_is_the_ddpm_layout():
  model = unet.UNet(
    channels=8,
    channel_mults=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(4,),
    groups=4,
    axis_name=None,
  )
  x, t = jnp.zeros((2, 8, 8, 3)), jnp.array([0, 999])
  variables = jax.jit(model.init)(jax.random.key(0), x, t)
  out = jax.jit(model.apply)(variables, x, t)
  assert out.shape == x.shape
  np.testing.assert_allclose(np.asarray(out), 0.0, atol=1e-6)  # The last layer starts at ~0.
  emb = np.asarray(unet.timestep_embedding(jnp.array([0, 5]), 8))
  freqs = np.exp(-math.log(10_000) * np.arange(4) / 3)
  np.testing.assert_allclose(
    emb[1], np.concatenate([np.sin(5 * freqs), np.cos(5 * freqs)]), rtol=1e-5
  )
