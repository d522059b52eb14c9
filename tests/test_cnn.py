"""CNN classifier: loss against a hand computation, train/eval behaviour."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cnn as cnn_config
from imgen.core import parallel
from imgen.core.errors import ConfigError
from imgen.data import DataSpec
from imgen.families import cnn
from imgen.models.classifiers import CLASSIFIERS
from imgen.models.classifiers import Dropout


def test_cross_entropy_matches_a_hand_computation():
  logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
  labels = np.array([2, 1])
  log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  expected = -log_softmax[np.arange(2), labels]
  np.testing.assert_allclose(cnn.cross_entropy(jnp.array(logits), jnp.array(labels)), expected)
  np.testing.assert_allclose(expected[1], np.log(3))


def test_confusion_image_is_row_normalised():
  confusion = np.array([[3, 1], [0, 4]], dtype=float)
  image = cnn.confusion_image(confusion, cell=2)
  assert image.shape == (4, 4, 1)
  np.testing.assert_allclose(image[0, 0, 0], 2 * 0.75 - 1)
  np.testing.assert_allclose(image[2, 2, 0], 1.0)


def test_models_shapes_and_dropout_only_in_training():
  """Each classifier: logits and features of the right shapes; in evaluation
  exactly the network without dropout; in training, masks that change with the key."""
  x = jax.random.normal(jax.random.key(0), (4, 28, 28, 1))
  for name, make in CLASSIFIERS.items():
    model, without = make(num_classes=10, width=4, dropout=0.5), make(num_classes=10, width=4)
    without = without.clone(dropout=0.0)
    variables = jax.jit(model.init)(jax.random.key(1), x)

    @jax.jit
    def outputs(variables, model=model, without=without):
      train = lambda net, key: net.apply(
        variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": key}
      )[0]
      keys = jax.random.split(jax.random.key(2))
      return (
        model.apply(variables, x),
        model.apply(variables, x, features=True),
        without.apply(variables, x),
        [train(model, k) for k in keys],
        train(without, keys[0]),
      )

    evaluated, (features, logits), plain, (train_a, train_b), train_plain = outputs(variables)
    assert evaluated.shape == (4, 10) and features.ndim == 2 and features.shape[0] == 4, name
    np.testing.assert_allclose(logits, evaluated, rtol=1e-6, err_msg=name)
    np.testing.assert_array_equal(evaluated, plain, err_msg=name)  # No dropout in evaluation.
    assert not np.allclose(train_a, train_b), name  # A mask per key...
    assert not np.allclose(train_a, train_plain), name  # ...that changes the output.


def test_dropout_masks_do_not_depend_on_the_device_count():
  """The same global batch through 1 and 4 replicas gets the same mask: inverted
  dropout at the configured rate, drawn for the global batch."""
  x = jnp.ones((8, 10_000))
  layer = Dropout(0.3, parallel.AXIS)
  apply = lambda x: layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(3)})
  one = jax.vmap(apply, axis_name=parallel.AXIS)(x[None])[0]
  four = jax.vmap(apply, axis_name=parallel.AXIS)(x.reshape(4, 2, -1)).reshape(x.shape)
  np.testing.assert_array_equal(one, four)
  assert set(np.unique(one)) == {0.0, np.float32(1 / 0.7)}
  np.testing.assert_allclose(np.mean(one == 0), 0.3, atol=4 * np.sqrt(0.3 * 0.7 / one.size))
  np.testing.assert_array_equal(layer.apply({}, x, deterministic=True), x)


def test_num_classes_must_match_the_labels():
  config = cnn_config.get_config("smoke")
  config.model.num_classes = 7
  with pytest.raises(ConfigError, match="model.num_classes=7, but the labels have 10 classes"):
    cnn.CNNFamily(config, DataSpec.of_images(28, 1, num_classes=10))


def test_a_run_reports_accuracy_and_a_confusion_matrix(smoke_run):
  _, workdir, metrics = smoke_run("cnn")
  assert {"loss", "accuracy", "learning_rate", "test/accuracy", "test/loss"} <= set(metrics)
  for name in ("confusion_matrix", "inputs"):
    assert os.path.exists(os.path.join(workdir, "samples", f"{name}_0000006.png")), name


def test_features_and_logits_of_a_state():
  family = cnn.CNNFamily(cnn_config.get_config("smoke"), DataSpec.of_images(28, 1, 10))
  state = family.init_state(jax.random.key(0))
  images = jnp.zeros((5, 28, 28, 1))
  assert family.logits(state, images).shape == (5, 10)
  assert family.features(state, images).shape == (5, 16)
