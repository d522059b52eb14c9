"""The FID Inception-v3: architecture, weight conversion and preprocessing.

The real weights cannot be downloaded here; these tests check what does not
need them. `benchmarks/inception_reference.py` compares the network with
pytorch-fid's on shared random weights where PyTorch is installed.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imgen.core.errors import ConfigError
from imgen.evaluation import features
from imgen.models import inception

# torchvision's Inception3 source comments give these shapes (299x299 input).
BLOCK_SHAPES = {
  "Conv2d_1a_3x3": (149, 149, 32),
  "Conv2d_2a_3x3": (147, 147, 32),
  "Conv2d_2b_3x3": (147, 147, 64),
  "maxpool1": (73, 73, 64),
  "Conv2d_3b_1x1": (73, 73, 80),
  "Conv2d_4a_3x3": (71, 71, 192),
  "maxpool2": (35, 35, 192),
  "Mixed_5b": (35, 35, 256),
  "Mixed_5c": (35, 35, 288),
  "Mixed_5d": (35, 35, 288),
  "Mixed_6a": (17, 17, 768),
  "Mixed_6b": (17, 17, 768),
  "Mixed_6c": (17, 17, 768),
  "Mixed_6d": (17, 17, 768),
  "Mixed_6e": (17, 17, 768),
  "Mixed_7a": (8, 8, 1280),
  "Mixed_7b": (8, 8, 2048),
  "Mixed_7c": (8, 8, 2048),
}


def test_shapes_at_every_block():
  model = inception.InceptionV3()
  x = jax.ShapeDtypeStruct((2, 299, 299, 3), jnp.float32)
  (feats, logits), state = jax.eval_shape(
    lambda v, x: model.apply(v, x, mutable=["intermediates"]), inception.variable_shapes(), x
  )
  got = {
    name.removesuffix("_output"): value[0].shape[1:]
    for name, value in state["intermediates"].items()
  }
  assert got == BLOCK_SHAPES
  assert feats.shape == (2, 2048) and logits.shape == (2, 1008)


def _count(tree, leaf_names=None) -> int:
  flat = flax.traverse_util.flatten_dict(tree)
  return sum(
    int(np.prod(v.shape)) for p, v in flat.items() if not leaf_names or p[-1] in leaf_names
  )


def test_parameter_count_matches_the_published_figure():
  # Keras' InceptionV3 (1,000 classes, its BatchNorm without a scale) lists
  # 23,851,784 parameters, 34,432 of them the BatchNorm moving mean and variance.
  variables = jax.eval_shape(
    inception.InceptionV3(1000).init,
    jax.random.key(0),
    jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32),
  )
  scales = _count(variables, {"scale"})
  assert _count(variables) - scales == 23_851_784
  assert _count(variables["batch_stats"]) == 34_432


def _random_variables(seed=0):
  rng = np.random.default_rng(seed)
  shapes = flax.traverse_util.flatten_dict(inception.variable_shapes())
  return flax.traverse_util.unflatten_dict(
    {p: rng.normal(size=s.shape).astype(np.float32) for p, s in shapes.items()}
  )


def test_weights_round_trip_through_the_pytorch_layout(tmp_path):
  variables = _random_variables()
  state = inception.torch_state_from_variables(variables)
  # The names and layouts of pytorch-fid's state dict.
  assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
  assert state["Mixed_6b.branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)
  assert state["Mixed_7c.branch3x3dbl_3b.bn.running_var"].shape == (384,)
  assert state["fc.weight"].shape == (1008, 2048) and state["fc.bias"].shape == (1008,)
  assert len(state) == 94 * 5 + 2  # 94 conv-BN units, each 5 arrays; the fc layer's 2.
  path = str(tmp_path / "weights.npz")
  np.savez(path, **state, **{"Conv2d_1a_3x3.bn.num_batches_tracked": np.array(0)})
  loaded = inception.load_weights(path)
  flat_a = flax.traverse_util.flatten_dict(variables)
  flat_b = flax.traverse_util.flatten_dict(loaded)
  assert flat_a.keys() == flat_b.keys()
  for k in flat_a:
    np.testing.assert_array_equal(flat_a[k], flat_b[k])


def test_bad_weight_files_fail_clearly(tmp_path):
  with pytest.raises(ConfigError, match="needs a weights file"):
    inception.load_weights(None)
  with pytest.raises(ConfigError, match="does not exist.*pt_inception-2015-12-05"):
    inception.load_weights(str(tmp_path / "absent.pth"))
  state = inception.torch_state_from_variables(_random_variables())
  del state["Mixed_5b.branch1x1.conv.weight"]
  state["fc.weight"] = state["fc.weight"][:1000]
  path = str(tmp_path / "other.npz")
  np.savez(path, **state)
  with pytest.raises(
    ConfigError,
    match=r"branch1x1.conv.weight: missing\n  "
    r"fc.weight: shape \(1000, 2048\), expected \(1008, 2048\)",
  ):
    inception.load_weights(path)
  with pytest.raises(ConfigError, match="does not exist"):
    features.create(_eval_config(str(tmp_path / "absent.npz")))


def _eval_config(path):
  import ml_collections  # noqa: PLC0415

  return ml_collections.ConfigDict(dict(feature_network="inception", inception_weights=path))


def _bilinear_half_pixel(image: np.ndarray, size: int) -> np.ndarray:
  """PyTorch's interpolate(bilinear, align_corners=False), by its formula, one axis at a time."""

  def along(x, axis):
    n = x.shape[axis]
    src = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = (src - lo).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return np.take(x, lo, axis) * (1 - w) + np.take(x, hi, axis) * w

  return along(along(image, 1), 2)


def test_preprocess_resizes_like_pytorch_fid():
  images = np.random.default_rng(0).uniform(-1, 1, (2, 28, 28, 1)).astype(np.float32)
  out = np.asarray(inception.preprocess(jnp.asarray(images)))
  assert out.shape == (2, 299, 299, 3)
  np.testing.assert_array_equal(out[..., 0], out[..., 2])  # Grey repeated to RGB.
  np.testing.assert_allclose(out[..., 0], _bilinear_half_pixel(images[..., 0], 299), atol=1e-5)
