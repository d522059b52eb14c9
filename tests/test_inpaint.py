"""Class guidance and inpainting of the diffusion family: guidance scales 0 and 1
against the unconditional and conditional networks, known pixels kept exactly, the masks,
the hole scores and the biharmonic baseline, and the conditional model end to end."""

import math
import os

from helpers import diffusion_family
from helpers import random_tree
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import diffusion_conditional
from imgen import modes
from imgen.core import parallel
from imgen.core.errors import ConfigError
from imgen.modes import inpaint


def _noisy_params(family, key):
  """Parameters far from the near-identity initialisation, so every input matters."""
  return random_tree(jax.eval_shape(family.init_state, jax.random.key(0)).net.params, key, 0.3)


def test_guidance_scale_0_is_the_unconditional_model_and_1_the_conditional():
  _, family = diffusion_family(diffusion_conditional, size=8, attention_resolutions=(4,))
  params = _noisy_params(family, jax.random.key(1))
  x = jax.random.normal(jax.random.key(2), (4, 8, 8, 1))
  t, labels = jnp.array([3, 7, 12, 19]), jnp.array([0, 3, 5, 9])
  null = jnp.full((4,), 10)

  @jax.jit  # One program for the four predictions.
  def predictions(params, x):
    eps = lambda y, guidance=1.0: family.network(params, y, guidance)(x, t)
    return eps(null), eps(labels), eps(labels, 0.0), eps(labels, 2.0)

  unconditional, conditional, scale_0, scale_2 = map(np.asarray, predictions(params, x))
  assert np.abs(conditional - unconditional).max() > 1e-3  # The labels matter.
  np.testing.assert_allclose(scale_0, unconditional, atol=1e-5)
  np.testing.assert_allclose(scale_2, 2 * conditional - unconditional, atol=1e-4)


def test_inpainting_keeps_the_known_pixels_exactly():
  config, family = diffusion_family(diffusion_conditional, size=8, attention_resolutions=(4,))
  state = family.init_state(jax.random.key(0))
  state = state.replace(net=state.net.replace(params=_noisy_params(family, jax.random.key(1))))
  images = np.asarray(jax.random.uniform(jax.random.key(2), (4, 8, 8, 1), minval=-1, maxval=1))
  known = inpaint.make_masks("boxes", 4, 8, seed=0)[..., None]
  config.inpaint.resample = 2
  call = jax.pmap(
    lambda s, k, x, m, y: family.inpaint(s, k, x, m, y, config.inpaint),
    axis_name=parallel.AXIS,
    in_axes=(0, None, 0, 0, 0),
  )
  out = np.asarray(
    call(
      parallel.replicate(state), jax.random.key(3), images[None], known[None], np.arange(4)[None]
    )
  )[0]
  hole = known[..., 0] < 0.5
  np.testing.assert_array_equal(out[~hole], images[~hole])
  assert np.abs(out[hole] - images[hole]).mean() > 0.05  # The holes were filled anew.
  assert np.abs(out).max() <= 1.0


@pytest.mark.parametrize("kind", inpaint.MASKS)
def test_masks_are_seeded_and_leave_holes_of_the_stated_size(kind):
  masks = inpaint.make_masks(kind, 50, 28, seed=4)
  np.testing.assert_array_equal(masks, inpaint.make_masks(kind, 50, 28, seed=4))
  holes = 1 - masks.mean(axis=(1, 2))
  assert set(np.unique(masks)) <= {0.0, 1.0} and holes.min() > 0
  if kind == "centre":
    np.testing.assert_allclose(holes, 14 * 14 / 28**2)
  else:
    assert 0.03 < holes.mean() < 0.5, holes.mean()
  with pytest.raises(ConfigError, match="inpaint.mask 'ring'; use one of"):
    inpaint.make_masks("ring", 1, 28, 0)


def test_hole_scores_and_the_biharmonic_baseline():
  truth = np.full((2, 8, 8, 1), -1.0)
  truth[:, 2:6, 2:6] = 1.0
  known = np.ones((2, 8, 8))
  known[:, 3:5, 3:5] = 0.0
  completed = truth.copy()
  completed[1, 3:5, 3:5] = 0.0  # [0, 1] error 0.5 on image 1's hole: PSNR 6.02 dB.
  scores = inpaint.hole_scores(truth, completed, known)
  np.testing.assert_allclose(scores["hole_psnr"], (100.0 + 10 * math.log10(4)) / 2)
  filled = inpaint.biharmonic(completed, known)
  np.testing.assert_array_equal(filled[known > 0.5], completed[known > 0.5])
  np.testing.assert_allclose(filled[:, 3:5, 3:5], 1.0, atol=0.05)  # Smooth from the bright ring.


def test_the_conditional_model_trains_samples_given_classes_and_inpaints(data_dir, tmp_path):
  config = diffusion_conditional.get_config("smoke")
  config.data.data_dir = data_dir
  config.train.num_steps = 3  # One save, one evaluation and one grid, at the end.
  config.eval.update(num_samples=16, batch_size=40)
  config.inpaint.update(mask="boxes", num_images=16)
  workdir = str(tmp_path)
  metrics = modes.run("train", config, workdir)
  assert config.diffusion.objective == "flow"  # The default; DDPM's bound is tested above.
  assert np.isfinite(metrics["test/loss"]) and 0 < metrics["test/x0_mse_sigma_1"] < 10
  config.eval.classes = "3,5"
  out = modes.run("sample", config, workdir)["folder"]
  with np.load(os.path.join(out, "samples.npz")) as f:
    assert list(f["labels"]) == [3] * 8 + [5] * 8
  record = modes.run("inpaint", config, workdir)
  assert set(record["results"]) == {"diffusion", "biharmonic"}
  assert 0 < record["results"]["diffusion"]["hole_psnr"] < 100
  with np.load(os.path.join(workdir, "inpaint", "step0000003_boxes.npz")) as f:
    known = f["known"][..., None] > 0
    assert f["completed"].shape == (16, 28, 28, 1)
    np.testing.assert_array_equal(f["completed"][known], f["images"][known])
  assert os.path.exists(os.path.join(workdir, "inpaint", "step0000003_boxes_000.png"))


def test_only_families_that_inpaint_take_the_inpaint_mode(data_dir, tmp_path):
  from configs import vae

  config = vae.get_config("smoke")
  config.data.data_dir = data_dir
  with pytest.raises(ConfigError, match="is for --mode=train,eval,sample, not --mode=inpaint"):
    modes.run("inpaint", config, str(tmp_path))
  config.modes += ",inpaint"  # Past the config's own list, the family says why.
  with pytest.raises(ConfigError, match="The vae family cannot inpaint"):
    modes.run("inpaint", config, str(tmp_path))
