"""What several test files share: every registered family's smoke config, a
run's final state, and the `main.py` command a user would type."""

import contextlib
import os
import sys
from unittest import mock

import jax
import tensorflow_datasets as tfds

from configs import common
from imgen import checkpoints
from imgen import data
from imgen import families

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = sorted(families.FAMILIES)  # Each family's default config is configs/<family>.py.
# The diffusion family with text or speech conditioning: the trainer's generic
# checks (faults, several devices, bfloat16, scanned calls) run on `diffusion`,
# whose code they share; tests/test_multimodal.py covers what they add.
CONDITIONED = ("speech_to_image", "text_to_image")
TRAINER_FAMILIES = [f for f in FAMILIES if f not in CONDITIONED]


def smoke_config(family: str, data_dir: str, **train_overrides):
  """configs/<family>.py:smoke on the test session's data."""
  config = common.default_config(family, "smoke")
  config.data.data_dir = data_dir
  config.train.update(train_overrides)
  return config


def final_state(config, workdir):
  """(state, step) of the newest intact checkpoint in `workdir`."""
  builder = data.get_builder(config.data.name, config.data.data_dir)
  spec = data.DataSpec.from_builder(builder, config.data.image_key, config.model.image_size)
  target = families.create(config, spec).init_state(jax.random.key(0))
  manager = checkpoints.make_manager(workdir, keep=1, create=False)
  state, step = checkpoints.restore_latest(manager, target)
  manager.close()
  return state, step


def main_command(family, workdir, data_dir, *overrides) -> list[str]:
  """`python main.py` on the family's smoke config (run it with cwd=ROOT)."""
  return [
    sys.executable,
    "main.py",
    f"--config=configs/{family}.py:smoke",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    *overrides,
  ]


@contextlib.contextmanager
def mock_cifar10(num_examples: int = 64):
  """tfds.testing's mock data under the name cifar10, as if it were prepared
  (CIFAR-10 cannot be downloaded here): for the paper configs' few steps."""
  splits = mock.patch.object(
    tfds.core.DatasetInfo,
    "splits",
    new_callable=mock.PropertyMock,
    return_value={"train": 0, "test": 0},
  )
  prepared = mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
  array_record = mock.patch.object(
    tfds.core.DatasetInfo,
    "file_format",
    new_callable=mock.PropertyMock,
    return_value=tfds.core.FileFormat.ARRAY_RECORD,
  )
  with splits, prepared, array_record, tfds.testing.mock_data(num_examples=num_examples):
    yield


def tensorboard_scalars(workdir: str) -> dict[str, dict[int, float]]:
  """{tag: {step: value}} of the scalars in `workdir/tensorboard`, read from
  its event files (TFRecord framing: length, its CRC, the Event, its CRC)."""
  from tensorboardX.proto import event_pb2

  out = {}
  folder = os.path.join(workdir, "tensorboard")
  for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name), "rb") as f:
      data = f.read()
    at = 0
    while at + 12 <= len(data):
      length = int.from_bytes(data[at : at + 8], "little")
      event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
      at += 12 + length + 4
      for value in event.summary.value:
        if value.HasField("simple_value"):
          out.setdefault(value.tag, {})[event.step] = value.simple_value
  return out
