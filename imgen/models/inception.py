"""Inception-v3 as used for FID, in Flax, taking the standard FID weights.

The network is Szegedy et al.'s Inception-v3 (arXiv:1512.00567) in the form of
the 2015-12-05 TensorFlow graph that FID was defined on (Heusel et al. 2017)
and that pytorch-fid and TF-GAN distribute: 1,008 classes, and in the Mixed
blocks average pools that leave padding out of the count, with the last block
max-pooling instead. Module and parameter names follow the PyTorch state dict
of pytorch-fid's `pt_inception-2015-12-05` file (`Mixed_5b.branch1x1.conv.
weight`, ...), so its weights load by name: `load_weights(path)` reads that
`.pth` file (with PyTorch installed) or an `.npz` of the same names and
arrays; `torch_state_from_variables` writes one.

Inputs are [-1, 1] images of any size; `preprocess` resizes them to 299x299
bilinearly (half-pixel centres, no antialiasing, as PyTorch's `interpolate`
with `align_corners=False` that pytorch-fid uses) and repeats a grey channel.
Outputs: the 2,048-d pool3 features (FID, KID, precision/recall) and logits
`pool3 @ W` without the bias, the form the reference Inception Score code
(Salimans et al. 2016) takes its softmax of.
"""

from collections.abc import Sequence
import os

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from imgen.core.errors import ConfigError

INPUT_SIZE = 299
NUM_CLASSES = 1008
FEATURES = 2048


class BasicConv(nn.Module):
  """Convolution without bias, BatchNorm (eps 1e-3, running averages), ReLU."""

  features: int
  kernel: Sequence[int]
  strides: int = 1
  padding: Sequence[int] = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ph, pw = self.padding
    x = nn.Conv(
      self.features,
      tuple(self.kernel),
      self.strides,
      padding=((ph, ph), (pw, pw)),
      use_bias=False,
      name="conv",
    )(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _conv(features, kernel, name, strides=1, padding=(0, 0)):
  kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
  return BasicConv(features, kernel, strides, padding, name=name)


def _avg_pool(x: jax.Array) -> jax.Array:
  """3x3, stride 1, padding 1, padded cells left out of the mean."""
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x: jax.Array, strides: int = 2, padding: int = 0) -> jax.Array:
  return nn.max_pool(x, (3, 3), (strides, strides), ((padding, padding),) * 2)


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = _conv(64, 1, "branch1x1")(x)
    b5 = _conv(64, 5, "branch5x5_2", padding=(2, 2))(_conv(48, 1, "branch5x5_1")(x))
    b3 = _conv(64, 1, "branch3x3dbl_1")(x)
    b3 = _conv(96, 3, "branch3x3dbl_2", padding=(1, 1))(b3)
    b3 = _conv(96, 3, "branch3x3dbl_3", padding=(1, 1))(b3)
    bp = _conv(self.pool_features, 1, "branch_pool")(_avg_pool(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = _conv(384, 3, "branch3x3", strides=2)(x)
    bd = _conv(64, 1, "branch3x3dbl_1")(x)
    bd = _conv(96, 3, "branch3x3dbl_2", padding=(1, 1))(bd)
    bd = _conv(96, 3, "branch3x3dbl_3", strides=2)(bd)
    return jnp.concatenate([b3, bd, _max_pool(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = _conv(192, 1, "branch1x1")(x)
    b7 = _conv(c7, 1, "branch7x7_1")(x)
    b7 = _conv(c7, (1, 7), "branch7x7_2", padding=(0, 3))(b7)
    b7 = _conv(192, (7, 1), "branch7x7_3", padding=(3, 0))(b7)
    bd = _conv(c7, 1, "branch7x7dbl_1")(x)
    bd = _conv(c7, (7, 1), "branch7x7dbl_2", padding=(3, 0))(bd)
    bd = _conv(c7, (1, 7), "branch7x7dbl_3", padding=(0, 3))(bd)
    bd = _conv(c7, (7, 1), "branch7x7dbl_4", padding=(3, 0))(bd)
    bd = _conv(192, (1, 7), "branch7x7dbl_5", padding=(0, 3))(bd)
    bp = _conv(192, 1, "branch_pool")(_avg_pool(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = _conv(320, 3, "branch3x3_2", strides=2)(_conv(192, 1, "branch3x3_1")(x))
    b7 = _conv(192, 1, "branch7x7x3_1")(x)
    b7 = _conv(192, (1, 7), "branch7x7x3_2", padding=(0, 3))(b7)
    b7 = _conv(192, (7, 1), "branch7x7x3_3", padding=(3, 0))(b7)
    b7 = _conv(192, 3, "branch7x7x3_4", strides=2)(b7)
    return jnp.concatenate([b3, b7, _max_pool(x)], axis=-1)


class InceptionE(nn.Module):
  """The last blocks; the FID graph average-pools in Mixed_7b, max-pools in Mixed_7c."""

  pool: str

  @nn.compact
  def __call__(self, x):
    b1 = _conv(320, 1, "branch1x1")(x)
    b3 = _conv(384, 1, "branch3x3_1")(x)
    b3 = jnp.concatenate(
      [
        _conv(384, (1, 3), "branch3x3_2a", padding=(0, 1))(b3),
        _conv(384, (3, 1), "branch3x3_2b", padding=(1, 0))(b3),
      ],
      axis=-1,
    )
    bd = _conv(448, 1, "branch3x3dbl_1")(x)
    bd = _conv(384, 3, "branch3x3dbl_2", padding=(1, 1))(bd)
    bd = jnp.concatenate(
      [
        _conv(384, (1, 3), "branch3x3dbl_3a", padding=(0, 1))(bd),
        _conv(384, (3, 1), "branch3x3dbl_3b", padding=(1, 0))(bd),
      ],
      axis=-1,
    )
    pooled = _avg_pool(x) if self.pool == "avg" else _max_pool(x, strides=1, padding=1)
    bp = _conv(192, 1, "branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """299x299x3 images in [-1, 1] -> (pool3 features, logits without bias).

  Every block's output is sown into the 'intermediates' collection, as
  "<block>_output".
  """

  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    def block(name, module_or_fn, x):
      x = module_or_fn(x)
      self.sow("intermediates", f"{name}_output", x)
      return x

    x = block("Conv2d_1a_3x3", _conv(32, 3, "Conv2d_1a_3x3", strides=2), x)
    x = block("Conv2d_2a_3x3", _conv(32, 3, "Conv2d_2a_3x3"), x)
    x = block("Conv2d_2b_3x3", _conv(64, 3, "Conv2d_2b_3x3", padding=(1, 1)), x)
    x = block("maxpool1", _max_pool, x)
    x = block("Conv2d_3b_1x1", _conv(80, 1, "Conv2d_3b_1x1"), x)
    x = block("Conv2d_4a_3x3", _conv(192, 3, "Conv2d_4a_3x3"), x)
    x = block("maxpool2", _max_pool, x)
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = block(name, InceptionA(pool_features, name=name), x)
    x = block("Mixed_6a", InceptionB(name="Mixed_6a"), x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = block(name, InceptionC(c7, name=name), x)
    x = block("Mixed_7a", InceptionD(name="Mixed_7a"), x)
    x = block("Mixed_7b", InceptionE("avg", name="Mixed_7b"), x)
    x = block("Mixed_7c", InceptionE("max", name="Mixed_7c"), x)
    features = jnp.mean(x, axis=(1, 2))
    fc = nn.Dense(self.num_classes, name="fc")
    fc(features)  # Creates the bias too, so every weight of the file has a place.
    logits = features @ fc.variables["params"]["kernel"]
    return features, logits


def preprocess(images: jax.Array) -> jax.Array:
  """[-1, 1] NHWC images with 1 or 3 channels -> 299x299x3, as pytorch-fid feeds them."""
  if images.shape[-1] == 1:
    images = jnp.repeat(images, 3, axis=-1)
  shape = (images.shape[0], INPUT_SIZE, INPUT_SIZE, 3)
  return jax.image.resize(images, shape, "bilinear", antialias=False)


# --- weights -------------------------------------------------------------------------------

_TORCH_NAMES = {
  ("params", "kernel"): "weight",
  ("params", "scale"): "weight",
  ("params", "bias"): "bias",
  ("batch_stats", "mean"): "running_mean",
  ("batch_stats", "var"): "running_var",
}


def _torch_layout(flax_array: np.ndarray) -> np.ndarray:
  """Flax HWIO conv kernels / (in, out) dense kernels -> PyTorch OIHW / (out, in)."""
  if flax_array.ndim == 4:
    return flax_array.transpose(3, 2, 0, 1)
  return flax_array.T if flax_array.ndim == 2 else flax_array


def _flax_layout(torch_array: np.ndarray) -> np.ndarray:
  if torch_array.ndim == 4:
    return torch_array.transpose(2, 3, 1, 0)
  return torch_array.T if torch_array.ndim == 2 else torch_array


def _torch_name(path: tuple[str, ...]) -> str:
  collection, *modules, leaf = path
  return ".".join([*modules, _TORCH_NAMES[(collection, leaf)]])


def torch_state_from_variables(variables) -> dict[str, np.ndarray]:
  """Flax variables -> pytorch-fid state-dict names and layouts (NumPy)."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
  return {_torch_name(path): _torch_layout(np.asarray(v)) for path, v in flat.items()}


def variables_from_torch_state(state: dict[str, np.ndarray], template) -> dict:
  """A pytorch-fid-named state dict -> Flax variables shaped like `template`.

  Every array of `template` must be in `state` with the matching shape; extra
  entries (`num_batches_tracked`) are ignored.
  """
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(template))
  out, problems = {}, []
  for path, like in flat.items():
    name = _torch_name(path)
    if name not in state:
      problems.append(f"{name}: missing")
      continue
    value = np.asarray(state[name], np.float32)
    expected = _torch_layout(np.empty(like.shape, np.bool_)).shape
    if value.shape != expected:
      problems.append(f"{name}: shape {value.shape}, expected {expected}")
    out[path] = _flax_layout(value)
  if problems:
    raise ConfigError(
      "These are not the FID Inception weights:\n  "
      + "\n  ".join(problems[:6])
      + (f"\n  ... and {len(problems) - 6} more" if len(problems) > 6 else "")
    )
  return flax.traverse_util.unflatten_dict(out)


def variable_shapes(num_classes: int = NUM_CLASSES):
  """The variables' shapes and dtypes, without computing anything."""
  x = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(InceptionV3(num_classes).init, jax.random.key(0), x)


def _read_state(path: str) -> dict[str, np.ndarray]:
  if path.endswith(".npz"):
    with np.load(path) as f:
      return dict(f)
  try:
    import torch  # noqa: PLC0415  (optional: only to read the .pth file itself)
  except ImportError as e:
    raise ConfigError(
      f"Reading {path} needs PyTorch (pip install torch). Or convert it once where "
      "PyTorch is installed: np.savez(out, **{k: v.numpy() for k, v in "
      "torch.load(path).items()}) and point eval.inception_weights at the .npz."
    ) from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  return {k: v.numpy() for k, v in state.items()}


def load_weights(path: str | None) -> dict:
  """FID Inception variables from pytorch-fid's `.pth` file or an `.npz` of it."""
  hint = (
    "Set --config.eval.inception_weights to a local copy of pytorch-fid's "
    "pt_inception-2015-12-05-6726825d.pth (or an .npz of its state dict); "
    "imgen does not download it."
  )
  if not path:
    raise ConfigError(f"eval.feature_network='inception' needs a weights file. {hint}")
  if not os.path.isfile(path):
    raise ConfigError(f"Inception weights file {path} does not exist. {hint}")
  return variables_from_torch_state(_read_state(path), variable_shapes())
