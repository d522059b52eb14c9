"""The judge family: a network that reads a scene's layout, the instrument of `--mode=prompts`.

GenEval (Ghosh et al. 2023) judges a text-to-image model by detecting the
objects in each sample and checking each asked attribute. Here the detector
is trained on real captioned scenes (`layout_scenes`): `imgen.models.reader`
reads, per cell of the 3x3 grid, whether a digit is there and its class,
colour name and size, and the scene's background. The loss per image is the
background's cross-entropy, plus per cell the binary cross-entropy of
"present", plus for the cells that hold a digit the cross-entropies of its
class, colour and size. The held-out evaluation reports, per attribute and
all at once, the share of real test scenes read right
(`imgen.methods.layouts`): the judge's ceiling, which every model score
beside it is read against. `judge.elastic` r > 0 distorts each training image
by a smooth random displacement field of RMS r pixels and correlation
`judge.elastic_sigma` pixels (Simard et al. 2003; `imgen.methods.elastic`):
new shapes of the 4,000 training digits, which the reader otherwise learns by
heart. With `judge.elastic_ink` (the default) the field is confined to each
scene's digits and two pixels around them (`elastic.confine`): distorting the
whole image also distorted the photographs the background is read from. Only
a share `judge.elastic_share` of the rows is distorted, and those rows teach
no size: a distortion moves a digit's extent, and the size bands are 2.5
pixels apart at 32x32.
"""

import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from imgen.core import parallel
from imgen.core.errors import ConfigError
from imgen.core.optim import make_optimizer
from imgen.core.train_state import SingleNetworkState
from imgen.core.train_state import TrainState
from imgen.data import VALID
from imgen.data import captions
from imgen.data.spec import DataSpec
from imgen.families.base import Evaluates
from imgen.families.base import Family
from imgen.methods import elastic
from imgen.methods import layouts
from imgen.models import compute_dtype
from imgen.models.reader import CellLogits
from imgen.models.reader import LayoutReader

SIZES = {"num_colours": len(captions.COLOURS), "num_sizes": len(captions.SIZES)}
FIELDS = ("digits", "cells", "colour_names", "sizes", "background")  # layout_scenes' labels.


def check(truth: layouts.Reading, read: layouts.Reading) -> dict[str, jax.Array]:
  """GenEval's checks of `read` against `truth` for the captions' colours and sizes."""
  return layouts.layout_checks(truth, read, **SIZES)


def true_reading(batch: dict) -> layouts.Reading:
  """The cell-by-cell layout of a batch's label fields (cells -1 where absent)."""
  cells = batch["cells"]
  onehot = (cells[..., None] == jnp.arange(layouts.NUM_CELLS)) & (cells >= 0)[..., None]
  pick = lambda v: jnp.sum(jnp.where(onehot, v[..., None], 0), axis=1)
  present = jnp.any(onehot, axis=1)
  sizes, colours = pick(batch["sizes"]), pick(batch["colour_names"])
  return layouts.Reading(present, pick(batch["digits"]), colours, sizes, batch["background"])


def read_logits(logits: CellLogits) -> layouts.Reading:
  """The layout the logits say: present where its logit > 0, else argmaxes."""
  top = lambda x: jnp.argmax(x, -1).astype(jnp.int32)
  return layouts.Reading(
    logits.present > 0,
    top(logits.digit),
    top(logits.colour),
    top(logits.size),
    top(logits.background),
  )


def reading_loss(logits: CellLogits, truth: layouts.Reading, sized=None) -> jax.Array:
  """Per image: the background's and every cell's losses (module docstring); the
  size's only where `sized` (N,) is True, if given."""
  ce = optax.softmax_cross_entropy_with_integer_labels
  present = truth.present.astype(jnp.float32)
  cells = optax.sigmoid_binary_cross_entropy(logits.present, present)
  for head, labels in ((logits.digit, truth.digit), (logits.colour, truth.colour)):
    cells += present * ce(head, labels)
  size = present * ce(logits.size, truth.size)
  cells += size if sized is None else jnp.where(sized[:, None], size, 0.0)
  return ce(logits.background, truth.background) + jnp.sum(cells, -1)


class JudgeFamily(Family, Evaluates):
  """Builds the layout reader's state, train/eval steps and `read`."""

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    missing = [f for f in FIELDS if f not in spec.fields]
    if missing:
      raise ConfigError(
        f"The judge family reads layouts; dataset {config.data.name!r} lacks {missing}. "
        "Use --config.data.name=layout_scenes."
      )
    group = config.get("judge") or {}  # A run from before `judge` reads as its defaults.
    self.elastic = (float(group.get("elastic", 0.0)), float(group.get("elastic_sigma", 3.0)))
    self.elastic_ink = bool(group.get("elastic_ink", False))
    self.elastic_share = float(group.get("elastic_share", 1.0))
    if not 0 < self.elastic_share <= 1:
      raise ConfigError(f"judge.elastic_share={self.elastic_share}; it must lie in (0, 1].")
    if self.elastic[0] < 0 or self.elastic[1] <= 0:
      raise ConfigError(
        f"judge.elastic={self.elastic[0]}, judge.elastic_sigma={self.elastic[1]}; "
        "use an RMS displacement >= 0 pixels (0: off) and a smoothing > 0 pixels."
      )
    m = config.model
    if min(m.width, m.levels, m.hidden) < 1 or not 0 <= m.dropout < 1:
      raise ConfigError(
        f"model.width={m.width}, levels={m.levels}, hidden={m.hidden} must be >= 1 and "
        f"model.dropout={m.dropout} in [0, 1)."
      )
    self.model = LayoutReader(
      num_backgrounds=len(captions.BACKGROUND_NAMES),
      num_colours=len(captions.COLOURS),
      num_sizes=len(captions.SIZES),
      width=m.width,
      levels=m.levels,
      hidden=m.hidden,
      dropout=m.dropout,
      axis_name=parallel.AXIS,
      dtype=compute_dtype(m.dtype),
    )
    self.image = spec.image
    self.optimizer = make_optimizer(config.optim, config.train.num_steps, "optim")
    model = self.model
    self._read = jax.jit(lambda s, x: read_logits(model.apply(s.net.variables(), x, train=False)))
    self._features = jax.jit(
      lambda s, x: model.apply(s.net.variables(), x, train=False, features=True)
    )

  def init_state(self, key: jax.Array) -> SingleNetworkState:
    x = jnp.zeros((1, *self.image.shape))
    return SingleNetworkState.create(TrainState.create(self.model, key, x, self.optimizer))

  def read(self, state: SingleNetworkState, images: np.ndarray) -> layouts.Reading:
    """The layouts of [-1, 1] images (N, H, W, C) of the judge's size, on the host."""
    parts = [self._read(state, images[i : i + 250]) for i in range(0, len(images), 250)]
    return layouts.Reading(*(np.concatenate([np.asarray(p[k]) for p in parts]) for k in range(5)))

  def features(self, state: SingleNetworkState, images: np.ndarray) -> np.ndarray:
    """(N, hidden) float64: what the heads read, the space of prompts' FID."""
    parts = [self._features(state, images[i : i + 250]) for i in range(0, len(images), 250)]
    return np.concatenate([np.asarray(p) for p in parts]).astype(np.float64)

  def make_train_step(self):
    model = self.model

    def train_step(state: SingleNetworkState, batch: dict, key: jax.Array):
      key = jax.random.fold_in(key, state.step)  # Dropout masks are drawn for the global batch.
      truth = true_reading(batch)
      images, sized = batch["image"], None
      if self.elastic[0] > 0:  # Fields drawn for the global batch, as the dropout masks.
        n = images.shape[0]
        fields = elastic.displacements(jax.random.fold_in(key, 1), *images.shape[:3], *self.elastic)
        if self.elastic_ink:
          fields = elastic.confine(fields, batch["mask"])
        u = parallel.global_draw(jax.random.uniform, jax.random.fold_in(key, 2), n, ())
        sized = u >= self.elastic_share  # The rows left as they are.
        fields = jnp.where(sized[:, None, None, None], 0.0, fields)
        images, _ = elastic.warp(images, jnp.zeros(images.shape[:3]), fields)

      def loss_fn(params):
        logits, updates = model.apply(
          state.net.variables(params),
          images,
          train=True,
          mutable=["batch_stats"],
          rngs={"dropout": key},
        )
        return jnp.mean(reading_loss(logits, truth, sized)), (logits, updates["batch_stats"])

      (loss, (logits, batch_stats)), grads = parallel.value_and_mean_grad(loss_fn)(state.net.params)
      right = check(truth, read_logits(logits))["all"]
      metrics = parallel.device_mean({"loss": loss, "all_correct": jnp.mean(right)})
      metrics.update(state.net.update_metrics(grads))
      net = state.net.apply_gradients(grads=grads, batch_stats=batch_stats)
      return state.replace(step=state.step + 1, net=net), metrics

    return train_step

  def make_eval_step(self):
    model = self.model

    def eval_step(state: SingleNetworkState, batch: dict, key: jax.Array):
      del key
      valid, truth = batch[VALID], true_reading(batch)
      logits = model.apply(state.net.variables(), batch["image"], train=False)
      checks = check(truth, read_logits(logits))
      sums = {name: jnp.sum(right * valid) for name, right in checks.items()}
      sums["loss"] = jnp.sum(reading_loss(logits, truth) * valid)
      sums["count_images"] = jnp.sum(valid)
      return lax.psum(sums, parallel.AXIS)

    return eval_step

  def summarize_eval(self, sums: dict) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    n = max(float(sums["count_images"]), 1.0)
    scalars = {f"read_{name}": float(sums[name]) / n for name in layouts.ATTRIBUTES}
    scalars.update(loss=float(sums["loss"]) / n, num_images=n)
    return scalars, {}

  @staticmethod
  def headline(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k in ("loss", "all_correct")}

  def show(self, state, key, batch) -> dict[str, np.ndarray]:
    """Held-out inputs as the judge sees them."""
    del state, key
    return {"inputs": batch["image"]}
