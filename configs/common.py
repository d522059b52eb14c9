"""Config pieces every experiment shares: the data, optimizer, train and eval
groups, and each registered family's default config (`configs/<family>.py`)."""

import importlib

import ml_collections
from ml_collections import config_dict


def data(name: str = "embedded_mnist", resize: str = "pad") -> ml_collections.ConfigDict:
  """A TFDS dataset by name; embedded ones are prepared on first use, offline."""
  return ml_collections.ConfigDict(
    dict(
      name=name,
      data_dir=config_dict.placeholder(str),  # None: TFDS's default.
      train_split="train",
      eval_split="test",
      image_key="image",
      resize=resize,  # 'pad' (centre on black) or 'resize' (crop + bilinear).
      num_threads=config_dict.placeholder(int),  # Input threads; None: one per core, <= 16.
    )
  )


def optimizer(learning_rate: float, **overrides) -> ml_collections.ConfigDict:
  """One network's optimizer (`imgen/core/optim.py`); `overrides` set any field."""
  group = ml_collections.ConfigDict(
    dict(
      name="adam",  # 'adam', 'adamw' or 'sgd'.
      learning_rate=learning_rate,  # The peak rate, after warmup.
      b1=0.9,  # adam/adamw.
      b2=0.999,
      eps=1e-8,
      momentum=0.0,  # sgd.
      nesterov=False,
      weight_decay=0.0,  # adamw: decoupled; adam/sgd: L2 added to the gradient.
      schedule="constant",  # After warmup: 'constant', 'cosine' or 'linear' decay.
      warmup_steps=0,  # Linear warmup from 0.
      decay_steps=config_dict.placeholder(int),  # None: train.num_steps.
      end_scale=0.0,  # Rate at decay_steps, as a fraction of learning_rate.
      clip_norm=0.0,  # Global gradient-norm clipping; 0 = off.
      ema_decay=0.0,  # EMA of the parameters for sampling and evaluation; 0 = off.
      ema_start=0,  # Updates before the EMA starts averaging.
    )
  )
  group.lock()  # A misspelt override is an error.
  group.update(overrides)
  return group


def train(num_steps: int, checkpoint_every: int, batch_size: int = 64) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      batch_size=batch_size,  # Global, over all devices.
      num_steps=num_steps,
      log_every=100,
      checkpoint_every=checkpoint_every,
      keep_checkpoints=3,
      on_nonfinite="stop",  # Or 'skip': drop updates with a non-finite loss or gradient.
      steps_per_dispatch=1,  # Steps per device call (lax.scan): hides dispatch cost.
    )
  )


def evaluation(
  every_steps: int,
  sample_every: int,
  batch_size: int,
  metrics: str = "",
  best_metric: str = "fid",
  best_mode: str = "min",
) -> ml_collections.ConfigDict:
  """Held-out evaluation, sample grids and sample-quality metrics.

  `metrics` (comma-separated: fid, kid, is, pr) score `num_samples` samples
  against `reference_split` (default data.eval_split) through
  `feature_network`: 'cnn' reads the classifier trained in `cnn_workdir`
  (python main.py --config=configs/cnn.py --workdir=runs/cnn), 'inception'
  the FID Inception-v3 weights file `inception_weights` (pytorch-fid's .pth,
  or an .npz of it). `best_metric` picks the checkpoint kept in workdir/best.
  `every_steps` (evaluations) and `sample_every` (grids) fall on those steps and
  the last; 0 turns them off while training (`--mode=eval` and `--mode=sample`
  still work on the checkpoints).
  """
  return ml_collections.ConfigDict(
    dict(
      every_steps=every_steps,
      batch_size=batch_size,
      sample_every=sample_every,
      grid_samples=64,  # Images per sample grid (conditional models: 8 per class).
      classes="",  # Conditional models: the classes to draw, e.g. '3,5'; '' = all.
      metrics=metrics,
      num_samples=1000,
      feature_network="cnn",
      cnn_workdir="runs/cnn",
      inception_weights=config_dict.placeholder(str),
      reference_split=config_dict.placeholder(str),  # None: data.eval_split.
      stats_dir=config_dict.placeholder(str),  # None: data_dir/imgen_features.
      kid_subsets=100,
      kid_subset_size=500,  # Half of a 1,000-image split, so subsets differ.
      is_splits=10,
      pr_k=3,
      best_metric=best_metric,
      best_mode=best_mode,  # 'min' or 'max'.
      # --mode=eval / --mode=sample:
      checkpoint_step=config_dict.placeholder(int),  # None: the newest; 0: untrained.
      best=False,  # Use the checkpoint in workdir/best instead.
      real_split=config_dict.placeholder(str),  # Score this split's real images instead.
    )
  )


def shrink_for_smoke(config: ml_collections.ConfigDict) -> None:
  """A run of seconds for tests: 6 steps of 8 images, checkpoints and evals at 3 and 6,
  one step per call (a scanned call of several steps compiles for many seconds on CPU)."""
  config.train.update(batch_size=8, num_steps=6, log_every=2, checkpoint_every=3)
  config.train.steps_per_dispatch = 1
  config.eval.update(every_steps=3, sample_every=3, grid_samples=16, num_samples=40, kid_subsets=4)
  config.eval.update(kid_subset_size=20, is_splits=2)


def unknown_variant(arg: str, path: str) -> ValueError:
  return ValueError(f"Unknown variant {arg!r} of {path}; known: 'smoke'.")


def default_config(family: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`configs/<family>.py`'s `get_config(arg)`: every family has one, named after it."""
  return importlib.import_module(f"configs.{family}").get_config(arg)
