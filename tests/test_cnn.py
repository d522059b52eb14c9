"""CNN classifier: loss against a hand computation, train/eval behaviour."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import cnn as cnn_config
from imgen import cnn
from imgen.data import ImageSpec
from imgen.models.cnn import CLASSIFIERS


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
  x = jax.random.normal(jax.random.key(0), (4, 28, 28, 1))
  for name, make in CLASSIFIERS.items():
    model = make(num_classes=10, width=4, dropout=0.5)
    variables = model.init(jax.random.key(1), x)
    assert model.apply(variables, x).shape == (4, 10), name
    features, logits = model.apply(variables, x, features=True)
    assert features.ndim == 2 and logits.shape == (x.shape[0], 10), name
    np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))
    train = [
      model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": k})[0]
      for k in jax.random.split(jax.random.key(2))
    ]
    if name == "simple":
      assert not np.allclose(train[0], train[1])


def test_features_and_logits_of_a_state():
  family = cnn.CNNFamily(cnn_config.get_config("smoke"), ImageSpec(28, 1))
  state = family.init_state(jax.random.key(0))
  images = jnp.zeros((5, 28, 28, 1))
  assert family.logits(state, images).shape == (5, 10)
  assert family.features(state, images).shape == (5, 16)
