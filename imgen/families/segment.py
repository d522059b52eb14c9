"""The segmentation family: a U-Net trained to label every pixel.

The dataset's mask feature (`data.mask_key`, an integer (H, W) tensor of the
image's size, values 0 .. model.num_classes - 1) is the target. Losses
(`seg.loss`):
- `ce`: per-pixel softmax cross-entropy, each pixel weighted by its true
  class's weight (`seg.class_weights`, default all 1), averaged over pixels;
- `dice`: 1 - soft Dice per image, (2 sum p y + 1) / (sum p + sum y + 1) per
  class from the softmax p and the one-hot truth y, averaged over the classes
  (weighted) and the images;
- `ce+dice`: their sum.
`seg.deep_supervision` w > 0 adds w times the mean, over the U-Net's lower expanding
levels, of the cross-entropy of each level's own 1x1 logits against the share of each
class among the pixels of its cell (deep supervision, Lee et al. 2015): a direct
gradient to the coarse features that must tell the digits apart.
`seg.elastic` r > 0 distorts each training image and its mask by a smooth random
displacement field of RMS r pixels and correlation `seg.elastic_sigma` pixels
(Simard et al. 2003; `imgen.methods.elastic`), new shapes of the same digits.
Both are means over images, so a step computes the same on any number of
devices. The held-out evaluation sums the confusion matrix over every valid
pixel of the split and reports per-class IoU, mean IoU, per-class and mean
Dice, pixel accuracy and the cross-entropy (`imgen.methods.masks`).
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
from imgen.data.spec import MASK
from imgen.data.spec import DataSpec
from imgen.families.base import Evaluates
from imgen.families.base import Family
from imgen.families.base import Segments
from imgen.families.cnn import confusion_image
from imgen.methods import elastic
from imgen.methods import masks as mask_lib
from imgen.models import compute_dtype
from imgen.models.seg_unet import NORMS
from imgen.models.seg_unet import SegUNet

LOSSES = ("ce", "dice", "ce+dice")


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """-log softmax(logits)[label] per pixel: (N, H, W, K), (N, H, W) -> (N, H, W)."""
  picked = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  return jax.nn.logsumexp(logits, axis=-1) - picked


def soft_dice(probs: jax.Array, labels: jax.Array, smooth: float = 1.0) -> jax.Array:
  """Per image and class: (2 sum p y + s) / (sum p + sum y + s) -> (N, K)."""
  onehot = jax.nn.one_hot(labels, probs.shape[-1], dtype=probs.dtype)
  overlap = jnp.sum(probs * onehot, axis=(1, 2))
  total = jnp.sum(probs, axis=(1, 2)) + jnp.sum(onehot, axis=(1, 2))
  return (2.0 * overlap + smooth) / (total + smooth)


def cell_cross_entropy(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """Per image: the mean over cells of -sum_c share_c log softmax(logits)_c, where a
  cell is the (H / h) x (W / w) block of `labels` (N, H, W) under logits (N, h, w, K)
  and share_c its fraction of pixels of class c -> (N,)."""
  n, h, w, _ = logits.shape
  s = labels.shape[1] // h
  onehot = jax.nn.one_hot(labels, k, dtype=jnp.float32).reshape(n, h, s, w, s, k)
  share = jnp.mean(onehot, axis=(2, 4))
  return -jnp.mean(jnp.sum(share * jax.nn.log_softmax(logits, -1), -1), axis=(1, 2))


def parse_weights(spec: str, num_classes: int) -> np.ndarray:
  """seg.class_weights: '' (all 1) or one comma-separated weight per class."""
  if not spec.strip():
    return np.ones(num_classes, np.float32)
  try:
    weights = np.array([float(w) for w in spec.split(",")], np.float32)
  except ValueError:
    raise ConfigError(f"seg.class_weights={spec!r}; use comma-separated numbers.") from None
  if len(weights) != num_classes or np.any(weights < 0) or not np.any(weights > 0):
    raise ConfigError(
      f"seg.class_weights={spec!r} has {len(weights)} weights; give {num_classes} "
      "non-negative numbers, one per class, not all 0."
    )
  return weights


def mask_field(config: ml_collections.ConfigDict, spec: DataSpec) -> str:
  """The batch name of the masks, checked: a ConfigError says what the data has instead."""
  key = config.data.mask_key
  field = spec.fields.get(key)
  if field is None:
    raise ConfigError(
      f"Dataset {config.data.name!r} has no mask feature {key!r}; its features are "
      f"{sorted(f.source for f in spec.fields.values())}. Set --config.data.mask_key."
    )
  if field.kind != MASK:
    image = spec.fields["image"].stored_shape
    raise ConfigError(
      f"Feature {key!r} of {config.data.name!r} has shape {field.stored_shape} and dtype "
      f"{field.dtype}; a mask must be an integer array of the image's height and width "
      f"{image[:2]}."
    )
  return key


def _block_means(model: SegUNet, variables, x: jax.Array) -> jax.Array:
  """(N, D): the spatial means of every ConvBlock's output of `model` on `x`."""
  _, captured = model.apply(
    variables,
    x,
    train=False,
    capture_intermediates=lambda module, name: (
      name == "__call__" and "ConvBlock" in type(module).__name__
    ),
    mutable=["intermediates"],
  )
  blocks = {k: v for k, v in captured["intermediates"].items() if not k.startswith("aux_")}
  leaves = jax.tree.leaves(blocks)  # The blocks' outputs, without deep supervision's logits.
  return jnp.concatenate([leaf.mean(axis=(1, 2)) for leaf in leaves], axis=-1)


class SegmentationFamily(Family, Evaluates, Segments):
  """Builds the U-Net's state, train/eval steps and mask images."""

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    m = config.model
    self.mask_field = mask_field(config, spec)
    if m.norm not in NORMS:
      raise ConfigError(f"model.norm={m.norm!r}; use one of {NORMS}.")
    if m.depth < 1 or m.width < 1:
      raise ConfigError(f"model.depth={m.depth}, model.width={m.width}; both must be >= 1.")
    mults = tuple(m.channel_mults)
    if mults and (len(mults) != m.depth + 1 or min(mults) < 1):
      raise ConfigError(
        f"model.channel_mults={mults}; give depth + 1 = {m.depth + 1} positive multiples of "
        "model.width, one per level and the bottom's last, or () to double per level."
      )
    if spec.size % 2**m.depth:
      raise ConfigError(
        f"model.image_size={spec.size} is not divisible by 2**model.depth={2**m.depth}; "
        "the U-Net halves the resolution depth times."
      )
    if config.seg.loss not in LOSSES:
      raise ConfigError(f"seg.loss={config.seg.loss!r}; use one of {LOSSES}.")
    # .get: a config.json of a run from before these settings reads as them off.
    self.deep_supervision = float(config.seg.get("deep_supervision", 0.0))
    self.elastic = (
      float(config.seg.get("elastic", 0.0)),
      float(config.seg.get("elastic_sigma", 1)),
    )
    if self.deep_supervision < 0:
      raise ConfigError(
        f"seg.deep_supervision={self.deep_supervision}; use a weight >= 0 (0: off)."
      )
    if self.elastic[0] < 0 or self.elastic[1] <= 0:
      raise ConfigError(
        f"seg.elastic={self.elastic[0]}, seg.elastic_sigma={self.elastic[1]}; "
        "use an RMS displacement >= 0 pixels (0: off) and a smoothing > 0 pixels."
      )
    if m.num_classes < 2:
      raise ConfigError(f"model.num_classes={m.num_classes}; segmentation needs 2 or more.")
    self.num_mask_classes = m.num_classes
    self.class_names = mask_lib.class_names(m.class_names, m.num_classes)
    self.weights = parse_weights(config.seg.class_weights, m.num_classes)
    self.loss = config.seg.loss
    self.depth = m.depth
    self.model = SegUNet(
      num_classes=m.num_classes,
      depth=m.depth,
      width=m.width,
      mults=mults,
      aux_heads=self.deep_supervision > 0,
      norm=m.norm,
      axis_name=parallel.AXIS,
      dtype=compute_dtype(m.dtype),
    )
    self.image = spec.image
    self.optimizer = make_optimizer(config.optim, config.train.num_steps, "optim")
    model = self.model
    self._logits = jax.jit(lambda s, x: model.apply(s.net.variables(), x, train=False))
    self._block_means = jax.jit(lambda s, x: _block_means(model, s.net.variables(), x))

  def init_state(self, key: jax.Array) -> SingleNetworkState:
    x = jnp.zeros((1, *self.image.shape))
    return SingleNetworkState.create(TrainState.create(self.model, key, x, self.optimizer))

  def _loss(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per image: the configured loss."""
    weights = jnp.asarray(self.weights)
    loss = jnp.zeros(labels.shape[0])
    if "ce" in self.loss.split("+"):
      loss += jnp.mean(pixel_cross_entropy(logits, labels) * weights[labels], axis=(1, 2))
    if "dice" in self.loss.split("+"):
      dice = soft_dice(jax.nn.softmax(logits), labels)
      loss += 1.0 - jnp.sum(dice * weights, -1) / jnp.sum(weights)
    return loss

  def make_train_step(self):
    model, field = self.model, self.mask_field

    def train_step(state: SingleNetworkState, batch: dict, key: jax.Array):
      images, labels = batch["image"], batch[field]
      if self.elastic[0] > 0:
        step_key = jax.random.fold_in(key, state.step)  # Fields drawn for the global batch.
        images, labels = elastic.distort(images, labels, step_key, *self.elastic)

      def loss_fn(params):
        logits, updates = model.apply(
          state.net.variables(params),
          images,
          train=True,
          mutable=["batch_stats", "intermediates"],
        )
        loss = jnp.mean(self._loss(logits, labels))
        aux = jax.tree.leaves(updates.get("intermediates", {}))
        if aux:
          k = logits.shape[-1]
          deep = [jnp.mean(cell_cross_entropy(a, labels, k)) for a in aux]
          loss += self.deep_supervision * sum(deep) / len(deep)
        return loss, (logits, updates.get("batch_stats", {}))

      (loss, (logits, batch_stats)), grads = parallel.value_and_mean_grad(loss_fn)(state.net.params)
      accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
      metrics = parallel.device_mean({"loss": loss, "pixel_accuracy": accuracy})
      metrics.update(state.net.update_metrics(grads))
      net = state.net.apply_gradients(grads=grads, batch_stats=batch_stats)
      return state.replace(step=state.step + 1, net=net), metrics

    return train_step

  def make_eval_step(self):
    model, field, k = self.model, self.mask_field, self.num_mask_classes

    def eval_step(state: SingleNetworkState, batch: dict, key: jax.Array):
      del key
      labels, valid = batch[field], batch[VALID]
      logits = model.apply(state.net.variables(), batch["image"], train=False)
      pixels = jnp.broadcast_to(valid[:, None, None], labels.shape)
      sums = {
        "loss": jnp.sum(pixel_cross_entropy(logits, labels) * pixels),
        "confusion": mask_lib.confusion(labels, jnp.argmax(logits, -1), k, pixels),
        "count": jnp.sum(valid),
      }
      return lax.psum(sums, parallel.AXIS)

    return eval_step

  def summarize_eval(self, sums: dict) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    confusion = np.asarray(sums["confusion"], np.float64)
    scalars = mask_lib.scores(confusion, self.class_names)
    scalars["loss"] = float(sums["loss"]) / max(confusion.sum(), 1.0)
    scalars["num_images"] = float(sums["count"])
    return scalars, {"confusion_matrix": confusion_image(confusion)[None]}

  @staticmethod
  def headline(metrics: dict[str, float]) -> dict[str, float]:
    return {"loss": metrics["loss"], "pixel acc": metrics["pixel_accuracy"]}

  def segment(self, state: SingleNetworkState, images: jax.Array) -> np.ndarray:
    """Labels (N, H, W) of [-1, 1] images (N, H, W, C) of any size: padded
    with their edge pixels to a multiple of 2**depth, segmented, cropped back."""
    h, w = images.shape[1:3]
    unit = 2**self.depth
    pad = ((0, 0), (0, -h % unit), (0, -w % unit), (0, 0))
    padded = np.pad(np.asarray(images, np.float32), pad, mode="edge")
    return np.asarray(jnp.argmax(self._logits(state, padded), -1))[:, :h, :w]

  def features(self, state: SingleNetworkState, images: jax.Array) -> np.ndarray:
    """(N, D): the spatial means of every U-Net block's output for [-1, 1]
    images, the feature space in which compose and prompts score FID."""
    out = [self._block_means(state, images[i : i + 250]) for i in range(0, len(images), 250)]
    return np.asarray(jnp.concatenate(out), np.float64)

  def show(self, state, key, batch) -> dict[str, np.ndarray]:
    """Rows of 8: held-out images, their true masks, the predicted masks."""
    del key
    images, truth = batch["image"][:24], batch[self.mask_field][:24]
    predicted = self.segment(state, images)
    return {"segmentation": mask_lib.triptych_rows(images, truth, predicted)}
