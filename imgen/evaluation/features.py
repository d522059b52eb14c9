"""Feature networks for sample-quality metrics: name -> loader.

- `cnn`: a classifier trained with `configs/cnn.py`, read from its workdir
  (`eval.cnn_workdir`): penultimate-layer features and class logits. The
  offline default for MNIST-like data.
- `inception`: the FID Inception-v3 (`imgen.models.inception`) from a local
  weights file (`eval.inception_weights`): pool3 features and logits.

Each network takes [-1, 1] images of the evaluated data and adapts them to its
own input (size, channels). Its `fingerprint` (a hash of its weights) names
the cached feature files of real data, so other weights never reuse them.
"""

from collections.abc import Callable
import dataclasses
import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from imgen.core.errors import ConfigError
from imgen.data import ImageSpec
from imgen.evaluation.experiment import Experiment
from imgen.models import inception


@dataclasses.dataclass(frozen=True)
class FeatureNetwork:
  """`apply(variables, images) -> (features, logits)`, per replica, jit-able."""

  name: str
  fingerprint: str
  variables: Any
  apply: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]
  description: str
  classifies: str | None = None  # The dataset whose classes the logits are (cnn), if any.


def fingerprint(variables: Any) -> str:
  """sha256 over every array's path, shape, dtype and bytes."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
    leaf = np.asarray(leaf)
    digest.update(f"{jax.tree_util.keystr(path)}{leaf.shape}{leaf.dtype}".encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def _match_channels(images: jax.Array, channels: int) -> jax.Array:
  if images.shape[-1] == channels:
    return images
  if images.shape[-1] == 1:
    return jnp.repeat(images, channels, axis=-1)
  if channels == 1:
    return jnp.mean(images, axis=-1, keepdims=True)
  raise ConfigError(f"Cannot feed {images.shape[-1]}-channel images to a {channels}-channel net.")


def _fit(images: jax.Array, spec: ImageSpec) -> jax.Array:
  """[-1, 1] images -> the network's input size (bilinear) and channels."""
  images = _match_channels(images, spec.channels)
  if images.shape[1:3] != (spec.size, spec.size):
    shape = (images.shape[0], spec.size, spec.size, spec.channels)
    images = jax.image.resize(images, shape, "bilinear", antialias=False)
  return images


def cnn_network(workdir: str) -> FeatureNetwork:
  """The newest checkpoint of a `configs/cnn.py` run in `workdir`."""
  hint = (
    f"Train the feature classifier once: python main.py --config=configs/cnn.py "
    f"--workdir={workdir} (about 5 minutes on a laptop CPU), or point "
    "--config.eval.cnn_workdir at one."
  )
  experiment, state, step = Experiment.of_run(workdir, "eval.cnn_workdir", hint, family="cnn")
  config, family, spec = experiment.config, experiment.family, experiment.spec.image
  model = family.model

  def apply(variables, images):
    return model.apply(variables, _fit(images, spec), train=False, features=True)

  variables = jax.device_get(state.net.variables())
  return FeatureNetwork(
    "cnn",
    fingerprint(variables),
    variables,
    apply,
    f"cnn ({workdir}, step {step})",
    config.data.name,
  )


def trained_cnn(workdir: str) -> tuple[dict, str]:
  """(variables, where) of the classifier trained in `workdir`: what
  `methods.texture.make_features` reads for texture.network='cnn'."""
  return cnn_network(workdir).variables, f"eval.cnn_workdir={workdir}"


def inception_network(weights_path: str | None) -> FeatureNetwork:
  """The FID Inception-v3 from pytorch-fid's weights file (or an .npz of it)."""
  variables = inception.load_weights(weights_path)
  model = inception.InceptionV3()

  def apply(variables, images):
    return model.apply(variables, inception.preprocess(images))

  return FeatureNetwork(
    "inception", fingerprint(variables), variables, apply, f"inception ({weights_path})"
  )


def create(eval_config: ml_collections.ConfigDict) -> FeatureNetwork:
  name = eval_config.feature_network
  if name == "cnn":
    return cnn_network(eval_config.cnn_workdir)
  if name == "inception":
    return inception_network(eval_config.inception_weights)
  raise ConfigError(f"eval.feature_network {name!r} is unknown; known: ['cnn', 'inception'].")
