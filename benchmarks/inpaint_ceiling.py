"""How often can the centre-box inpainting task be read right at all?

`--mode=inpaint` with `inpaint.mask=centre` hides the middle quarter of each test digit and
asks how often the in-domain classifier reads the completion as the true digit. A completion
followed by that classifier is itself a classifier of the masked digit, so no inpainter beats
the best classifier of masked digits; and one that samples completions from the true
posterior p(x | visible pixels) is read right about E[p(true digit | visible)] of the time.

This trains imgen's SimpleCNN (configs/cnn.py's network) on centre-masked training digits
(random shifts of up to 2 pixels, the hole filled with the background value -1) and reports,
on the first N test digits (N = 500, `--mode=inpaint`'s default, and all of them), its
accuracy (an estimate of the best any reading of the masked digits can do) and its mean
probability of the true digit (what sampling from the posterior gets, if it is calibrated).
A measurement, not a test: about 2 minutes on a 2-core CPU.

  python benchmarks/inpaint_ceiling.py
"""

import os
import sys

import jax
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import cnn  # noqa: E402
from imgen.data import VALID  # noqa: E402
from imgen.evaluation.experiment import Experiment  # noqa: E402
from imgen.models.classifiers import SimpleCNN  # noqa: E402

STEPS, BATCH = 4000, 64


def split_arrays(experiment: Experiment, split: str) -> tuple[np.ndarray, np.ndarray]:
  images, labels = [], []
  for batch in experiment.eval_batches(split):
    valid = np.asarray(batch[VALID]).reshape(-1) > 0
    images.append(np.asarray(batch["image"]).reshape(-1, *batch["image"].shape[2:])[valid])
    labels.append(np.asarray(batch["label"]).reshape(-1)[valid])
  return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def hide_centre(images: np.ndarray) -> np.ndarray:
  """The centre box of half the side (imgen.modes.inpaint's 'centre') set to -1."""
  out, size = images.copy(), images.shape[1]
  side = size // 2
  start = (size - side) // 2
  out[:, start : start + side, start : start + side] = -1.0
  return out


def main() -> None:
  experiment = Experiment.create(cnn.get_config())
  train_x, train_y = split_arrays(experiment, "train")
  test_x, test_y = split_arrays(experiment, "test")
  model = SimpleCNN(num_classes=10, width=32, dropout=0.3)
  key = jax.random.key(0)
  variables = model.init(key, train_x[:2], train=False)
  tx = optax.adam(optax.cosine_decay_schedule(1e-3, STEPS))

  @jax.jit
  def step(params, stats, opt_state, x, y, key):
    def loss_fn(params):
      logits, updates = model.apply(
        {"params": params, "batch_stats": stats},
        x,
        train=True,
        rngs={"dropout": key},
        mutable=["batch_stats"],
      )
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    changes, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, changes), updates["batch_stats"], opt_state, loss

  params, stats = variables["params"], variables["batch_stats"]
  opt_state, rng = tx.init(params), np.random.default_rng(0)
  for i in range(STEPS):
    rows = rng.integers(0, len(train_x), BATCH)
    shifted = np.roll(train_x[rows], tuple(rng.integers(-2, 3, 2)), axis=(1, 2))
    params, stats, opt_state, loss = step(
      params, stats, opt_state, hide_centre(shifted), train_y[rows], jax.random.fold_in(key, i)
    )
    if i % 1000 == 0:
      print(f"step {i}: loss {float(loss):.3f}", flush=True)
  logits = model.apply({"params": params, "batch_stats": stats}, hide_centre(test_x))
  probs = np.asarray(jax.nn.softmax(logits))
  right = np.argmax(probs, axis=1) == test_y
  p_true = probs[np.arange(len(test_y)), test_y]
  for n in (500, len(test_y)):
    print(
      f"first {n} test digits, centre hidden: best reading {right[:n].mean():.3f}, "
      f"mean p(true digit) {p_true[:n].mean():.3f}"
    )


if __name__ == "__main__":
  main()
