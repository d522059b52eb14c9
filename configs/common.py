"""Config pieces every experiment shares: the data, train and eval groups."""

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
    )
  )


def train(num_steps: int, checkpoint_every: int, batch_size: int = 64) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      batch_size=batch_size,  # Global, over all devices.
      num_steps=num_steps,
      log_every=100,
      checkpoint_every=checkpoint_every,
      keep_checkpoints=3,
    )
  )


def evaluation(every_steps: int, sample_every: int, batch_size: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(every_steps=every_steps, batch_size=batch_size, sample_every=sample_every, num_samples=64)
  )


def shrink_for_smoke(config: ml_collections.ConfigDict) -> None:
  """A run of seconds for tests: 6 steps of 8 images, checkpoints and evals at 3 and 6."""
  config.train.update(batch_size=8, num_steps=6, log_every=2, checkpoint_every=3)
  config.eval.update(every_steps=3, sample_every=3, num_samples=16)


def unknown_variant(arg: str, path: str) -> ValueError:
  return ValueError(f"Unknown variant {arg!r} of {path}; known: 'smoke'.")
