"""The CNN family: a classifier trained with softmax cross-entropy.

BatchNorm uses batch statistics synchronised across devices when training and
its running averages otherwise; dropout is active only when training, with
masks drawn for the global batch from (seed, step). `features(state, images)`
and `logits(state, images)` serve a trained checkpoint as a feature network
(EMA weights when `optim.ema_decay` is on).
"""

import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np

from imgen.core import parallel
from imgen.core.errors import ConfigError
from imgen.core.optim import make_optimizer
from imgen.core.train_state import SingleNetworkState
from imgen.core.train_state import TrainState
from imgen.data import VALID
from imgen.data.spec import DataSpec
from imgen.families.base import Evaluates
from imgen.families.base import Family
from imgen.models import compute_dtype
from imgen.models.classifiers import CLASSIFIERS


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """-log softmax(logits)[label] per example."""
  return (
    jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
  )


def confusion_image(confusion: np.ndarray, cell: int = 16) -> np.ndarray:
  """Row-normalised confusion matrix (true class per row) as a [-1, 1] image."""
  rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
  image = np.kron(rows, np.ones((cell, cell)))[..., None]
  return image * 2.0 - 1.0


class CNNFamily(Family, Evaluates):
  """Builds the classifier's state, train/eval steps and feature functions."""

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    m = config.model
    if m.name not in CLASSIFIERS:
      raise ConfigError(f"model.name {m.name!r} is unknown; known: {sorted(CLASSIFIERS)}.")
    if "label" not in spec.fields:
      raise ConfigError(
        f"The cnn family needs a 'label' field; the data has {sorted(spec.fields)}."
      )
    if spec.num_classes and spec.num_classes != m.num_classes:
      raise ConfigError(
        f"model.num_classes={m.num_classes}, but the labels have {spec.num_classes} classes; "
        f"set --config.model.num_classes={spec.num_classes}."
      )
    self.model = CLASSIFIERS[m.name](
      num_classes=m.num_classes,
      width=m.width,
      dropout=m.dropout,
      axis_name=parallel.AXIS,
      dtype=compute_dtype(m.dtype),
    )
    self.num_classes = m.num_classes
    self.image = spec.image
    self.optimizer = make_optimizer(config.optim, config.train.num_steps, "optim")
    model = self.model
    self._logits = jax.jit(lambda s, x: model.apply(s.net.variables(), x, train=False))
    self._features = jax.jit(
      lambda s, x: model.apply(s.net.variables(), x, train=False, features=True)[0]
    )

  def init_state(self, key: jax.Array) -> SingleNetworkState:
    x = jnp.zeros((1, *self.image.shape))
    return SingleNetworkState.create(TrainState.create(self.model, key, x, self.optimizer))

  def logits(self, state: SingleNetworkState, images: jax.Array) -> jax.Array:
    """Class logits of [-1, 1] images, BatchNorm on running averages, no dropout."""
    return self._logits(state, images)

  def features(self, state: SingleNetworkState, images: jax.Array) -> jax.Array:
    """Penultimate-layer features of [-1, 1] images."""
    return self._features(state, images)

  def make_train_step(self):
    model = self.model

    def train_step(state: SingleNetworkState, batch: dict, key: jax.Array):
      key = jax.random.fold_in(key, state.step)  # Dropout masks are drawn for the global batch.
      labels = batch["label"]

      def loss_fn(params):
        logits, updates = model.apply(
          state.net.variables(params),
          batch["image"],
          train=True,
          mutable=["batch_stats"],
          rngs={"dropout": key},
        )
        return jnp.mean(cross_entropy(logits, labels)), (logits, updates["batch_stats"])

      (loss, (logits, batch_stats)), grads = parallel.value_and_mean_grad(loss_fn)(state.net.params)
      accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
      metrics = parallel.device_mean({"loss": loss, "accuracy": accuracy})
      metrics.update(state.net.update_metrics(grads))
      net = state.net.apply_gradients(grads=grads, batch_stats=batch_stats)
      return state.replace(step=state.step + 1, net=net), metrics

    return train_step

  def make_eval_step(self):
    model, k = self.model, self.num_classes

    def eval_step(state: SingleNetworkState, batch: dict, key: jax.Array):
      del key
      valid, labels = batch[VALID], batch["label"]
      logits = model.apply(state.net.variables(), batch["image"], train=False)
      predicted = jnp.argmax(logits, -1)
      confusion = jnp.einsum(
        "n,ni,nj->ij", valid, jax.nn.one_hot(labels, k), jax.nn.one_hot(predicted, k)
      )
      sums = {
        "loss": jnp.sum(cross_entropy(logits, labels) * valid),
        "correct": jnp.sum((predicted == labels) * valid),
        "count": jnp.sum(valid),
        "confusion": confusion,
      }
      return lax.psum(sums, parallel.AXIS)

    return eval_step

  def summarize_eval(self, sums: dict) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    count = float(sums["count"])
    scalars = {
      "loss": float(sums["loss"]) / count,
      "accuracy": float(sums["correct"]) / count,
      "num_images": count,
    }
    return scalars, {"confusion_matrix": confusion_image(np.asarray(sums["confusion"]))[None]}

  @staticmethod
  def headline(metrics: dict[str, float]) -> dict[str, float]:
    return {k: metrics[k] for k in ("loss", "accuracy")}

  def show(self, state, key, batch) -> dict[str, np.ndarray]:
    """Held-out inputs, for a look at what the classifier sees."""
    del state, key
    return {"inputs": batch["image"]}
