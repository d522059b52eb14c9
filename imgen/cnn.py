"""The CNN family: a classifier trained with softmax cross-entropy.

BatchNorm uses batch statistics synchronised across devices when training and
its running averages otherwise; dropout is active only when training, with a
key folded from (step, replica). `features(state, images)` and
`logits(state, images)` serve a trained checkpoint as a feature network.
"""

from collections.abc import Callable

import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from imgen.data import ImageSpec
from imgen.errors import ConfigError
from imgen.models.cnn import CLASSIFIERS
from imgen.steps import AXIS
from imgen.steps import Network
from imgen.steps import State
from imgen.steps import compute_dtype
from imgen.steps import init_network


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


class CNNFamily:
  """Builds the classifier's state, train/eval steps and feature functions."""

  def __init__(self, config: ml_collections.ConfigDict, spec: ImageSpec):
    m = config.model
    if m.name not in CLASSIFIERS:
      raise ConfigError(f"model.name {m.name!r} is unknown; known: {sorted(CLASSIFIERS)}.")
    make = CLASSIFIERS[m.name]
    self.model = make(
      num_classes=m.num_classes,
      width=m.width,
      dropout=m.dropout,
      axis_name=AXIS,
      dtype=compute_dtype(m.dtype),
    )
    self.num_classes = m.num_classes
    self.spec = spec
    learning_rate = config.optim.learning_rate
    if config.optim.cosine_decay:
      learning_rate = optax.cosine_decay_schedule(learning_rate, config.train.num_steps)
    self.tx = optax.chain(
      optax.add_decayed_weights(config.optim.weight_decay),
      optax.adam(learning_rate, b1=config.optim.b1, b2=config.optim.b2),
    )
    model = self.model
    self._logits = jax.jit(lambda s, x: model.apply(s.net.variables(), x, train=False))
    self._features = jax.jit(
      lambda s, x: model.apply(s.net.variables(), x, train=False, features=True)[0]
    )

  def init_state(self, key: jax.Array) -> State:
    x = jnp.zeros((1, *self.spec.shape))
    return State(jnp.zeros((), jnp.int32), init_network(self.model, key, x, self.tx))

  def logits(self, state: State, images: jax.Array) -> jax.Array:
    """Class logits of [-1, 1] images, BatchNorm on running averages, no dropout."""
    return self._logits(state, images)

  def features(self, state: State, images: jax.Array) -> jax.Array:
    """Penultimate-layer features of [-1, 1] images."""
    return self._features(state, images)

  def make_train_step(self) -> Callable:
    model, tx = self.model, self.tx

    def train_step(state: State, batch: dict, key: jax.Array):
      key = jax.random.fold_in(jax.random.fold_in(key, state.step), lax.axis_index(AXIS))
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

      (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.net.params
      )
      grads = lax.pmean(grads, AXIS)
      updates, opt_state = tx.update(grads, state.net.opt_state, state.net.params)
      params = optax.apply_updates(state.net.params, updates)
      accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
      metrics = lax.pmean({"loss": loss, "accuracy": accuracy}, AXIS)
      metrics["grad_norm"] = optax.tree.norm(grads)
      return State(state.step + 1, Network(params, batch_stats, opt_state)), metrics

    return train_step

  def make_eval_step(self) -> Callable:
    model, k = self.model, self.num_classes

    def eval_step(state: State, batch: dict, key: jax.Array):
      del key
      mask, labels = batch["mask"], batch["label"]
      logits = model.apply(state.net.variables(), batch["image"], train=False)
      predicted = jnp.argmax(logits, -1)
      confusion = jnp.einsum(
        "n,ni,nj->ij", mask, jax.nn.one_hot(labels, k), jax.nn.one_hot(predicted, k)
      )
      sums = {
        "loss": jnp.sum(cross_entropy(logits, labels) * mask),
        "correct": jnp.sum((predicted == labels) * mask),
        "count": jnp.sum(mask),
        "confusion": confusion,
      }
      return lax.psum(sums, AXIS)

    return eval_step

  @staticmethod
  def make_generate() -> None:
    """A classifier makes no images."""
    return None

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

  def sample_images(self, state, key, num, held_out) -> dict[str, np.ndarray]:
    """Held-out inputs, for a look at what the classifier sees."""
    del state, key
    return {"inputs": held_out[:num]}
