"""What several test files share: every registered family's smoke config, the
training runs the session shares between its workers, a run's final state, the
`main.py` command a user would type, the check that an error came before any
device program ran, and the 4-vs-1 replica runs."""

import atexit
import contextlib
import fcntl
import json
import math
import os
import select
import shutil
import subprocess
import sys
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from configs import common
from imgen import data
from imgen import families
from imgen.core import checkpoints
from imgen.data.spec import DataSpec
from imgen.families.diffusion import DiffusionFamily
from imgen.modes import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = sorted(families.FAMILIES)  # Each family's default config is configs/<family>.py.

# Families whose train step another family's run checks whole:
# - diffusion's step is text_to_image's (TextToImageFamily inherits DiffusionFamily's
#   make_train_step and adds the caption's encoder; configs/text_to_image.py:smoke keeps the
#   U-Net's global dropout masks on);
# - speech_to_image runs text_to_image's sequence-conditioned step with another encoder,
#   whose layers (each clip normalised, convolutions, LayerNorm) see one example at a time.
# Both run their own modes; speech_to_image's encoder in bfloat16 is checked on its own
# (tests/test_multimodal.py), and the non-finite guard of their step by text_to_image's run.
COVERED_BY_TEXT = ("diffusion", "speech_to_image")


@contextlib.contextmanager
def file_lock(path: str):
  """Holds an exclusive lock on the file `path` (made if missing): one process
  of the test session at a time, the others wait."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def nothing_compiled():
  """Fails the test if a program mapped over the devices is called inside the
  block: the train, eval and sampling steps all are (`jax.pmap`), and each
  compiles on its first call, so an error raised in the block came before any
  of them compiled."""
  called, real = [], jax.pmap

  def recording(fn, *args, **kwargs):
    mapped = real(fn, *args, **kwargs)

    def call(*a, **k):
      called.append(getattr(fn, "__name__", repr(fn)))
      return mapped(*a, **k)

    return call

  with mock.patch.object(jax, "pmap", recording):
    try:
      yield
    finally:
      assert not called, f"ran device programs before failing: {called}"


def needs_extra(family: str) -> None:
  """Skips the test where `family` needs an optional extra that is not installed."""
  if family == "speech_to_image":
    pytest.importorskip("espeakng_loader", reason='the speech extra: pip install -e ".[speech]"')


def assert_trees_close(a, b, **tolerance) -> None:
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tolerance)


def assert_trees_equal(a, b) -> None:
  """Bit for bit, leaf by leaf."""
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def random_tree(shapes, key: jax.Array, scale: float):
  """`scale` times standard normal draws in float32, shaped like the tree
  `shapes` (arrays or `jax.eval_shape`'s structs: no initialisation compiled),
  from one draw over all of them: a draw per leaf compiles a random-bits
  program per leaf (16 s for a smoke U-Net's 178 leaves)."""
  leaves, tree = jax.tree.flatten(shapes)
  sizes = [math.prod(x.shape) for x in leaves]

  @jax.jit
  def draw(key):
    flat = scale * jax.random.normal(key, (sum(sizes),))
    parts = jnp.split(flat, np.cumsum(sizes)[:-1])
    return tree.unflatten([p.reshape(x.shape) for p, x in zip(parts, leaves, strict=True)])

  return draw(key)


def shared_folder(name: str) -> str:
  """`name` in the session folder that every process of the test run shares."""
  return os.path.join(os.environ["IMGEN_TEST_SHARED"], name)


def shared_training(name: str, config) -> tuple[str, dict]:
  """(workdir, returned metrics) of `train.train_and_evaluate(config)` in
  `runs/<name>` of the session folder (tests/conftest.py): trained by the first
  process of the session that asks for `name` while the others wait on its lock
  file, then read by all. Tests may add files to it, never change its checkpoints."""
  workdir = shared_folder(os.path.join("runs", name))
  done = workdir + ".json"
  with file_lock(workdir + ".lock"):
    if not os.path.exists(done):
      shutil.rmtree(workdir, ignore_errors=True)  # A worker that died mid-run.
      metrics = train.train_and_evaluate(config, workdir)
      with open(done + ".tmp", "w") as f:
        json.dump(metrics, f)
      os.replace(done + ".tmp", done)
  with open(done) as f:
    return workdir, json.load(f)


def smoke_config(family: str, data_dir: str, **train_overrides):
  """configs/<family>.py:smoke on the test session's data."""
  config = common.default_config(family, "smoke")
  config.data.data_dir = data_dir
  config.train.update(train_overrides)
  if family == "distill":  # Distilled from the session's diffusion smoke run.
    teacher = smoke_config("diffusion", data_dir)
    config.distill.teacher_workdir = shared_training("smoke-diffusion", teacher)[0]
  return config


def conditional_gan_run(data_dir: str) -> tuple[str, dict]:
  """The session's run of configs/gan_conditional.py:smoke (a class-conditional GAN with
  R1): its own test's subject and compose's digit generator."""
  config = common.default_config("gan_conditional", "smoke")
  config.data.data_dir = data_dir
  return shared_training("smoke-gan_conditional", config)


def override(config, flag: str) -> None:
  """Sets `group.field=value` on `config` as main.py's --config.group.field=value
  would: the value read as the field's type (a number, bool or string; a number
  or bool where the field is a placeholder)."""
  key, value = flag.removeprefix("--config.").split("=", 1)
  *groups, field = key.split(".")
  target = config
  for group in groups:
    target = target[group]
  current = target[field]
  if isinstance(current, bool) or (current is None and value in ("true", "false")):
    target[field] = value == "true"
  elif isinstance(current, (int, float, str)):
    target[field] = type(current)(value)
  else:
    for kind in (int, float, str):
      try:
        target[field] = kind(value)
        break
      except ValueError:
        pass


def final_state(config, workdir):
  """(state, step) of the newest intact checkpoint in `workdir`."""
  builder = data.get_builder(config.data.name, config.data.data_dir)
  spec = data.DataSpec.from_builder(builder, config.data.image_key, config.model.image_size)
  target = checkpoints.restore_target(families.create(config, spec).init_state, jax.random.key(0))
  manager = checkpoints.make_manager(workdir, keep=1, create=False)
  state, step = checkpoints.restore_latest(manager, target)
  manager.close()
  return state, step


def saved_state(workdir: str, step: int | None = None):
  """(leaves, step) of the checkpoint of `step` (default: the newest) in
  `workdir`, read as saved (NumPy arrays in the checkpoint's own order): for
  comparing two runs' states leaf by leaf without building (and tracing) the
  family's state to restore into."""
  manager = checkpoints.make_manager(workdir, keep=1, create=False)
  step = manager.latest_step() if step is None else step
  tree = manager.restore(step, args=ocp.args.StandardRestore())
  manager.close()
  return [np.asarray(x) for x in jax.tree.leaves(tree)], step


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


_REPLICAS: list = []  # This process's server of 4-replica steps (tests/replicas.py), once started.


def _replica_server() -> subprocess.Popen:
  if not _REPLICAS or _REPLICAS[0].poll() is not None:
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "4", "JAX_PLATFORMS": "cpu"}
    script = os.path.join(ROOT, "tests", "replicas.py")
    log = shared_folder(f"replicas-{os.getpid()}.log")
    with open(log, "w") as stderr:
      server = subprocess.Popen(
        [sys.executable, script],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
      )
    server.log = log
    atexit.register(server.kill)
    _REPLICAS[:] = [server]
  return _REPLICAS[0]


def four_and_one_replicas(family: str, data_dir: str, out: str, *flags: str):
  """Two train steps of `family`'s smoke config (with `flags`, main.py's
  --config.x=y) on 4 replicas, in a process of 4 CPU devices (tests/replicas.py
  writes them to `out`), and on this process's one device, from the same global
  batches and keys: ({'<path>': leaf, 'metrics/<name>': value} of 4, of 1)."""
  import replicas  # pylint: disable=g-import-not-at-top

  one, initial = replicas.train_steps(family, data_dir, list(flags), devices=1)
  initial_path = out + ".initial.npz"
  np.savez(initial_path, **{f"leaf_{i}": x for i, x in enumerate(initial)})
  server = _replica_server()
  server.stdin.write(json.dumps([out, initial_path, family, data_dir, list(flags)]) + "\n")
  server.stdin.flush()
  if not select.select([server.stdout], [], [], 600)[0]:  # As subprocess.run's timeout was.
    server.kill()
    raise AssertionError(f"tests/replicas.py answered nothing in 600 s; its log: {server.log}")
  answer = server.stdout.readline()
  if not answer:
    with open(server.log) as f:
      raise AssertionError(f"tests/replicas.py exited with {server.wait()}: {f.read()[-3000:]}")
  assert json.loads(answer) == "ok", json.loads(answer)[-3000:]
  with np.load(out) as f:
    four = {k: f[k] for k in f.files}
  assert sorted(four) == sorted(one)
  return four, one


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


def diffusion_family(config_module, size=28, **model):
  """(config, DiffusionFamily) of `config_module`'s smoke config at `size`, its model updated
  by `model`; class-conditional if the config is."""
  config = config_module.get_config("smoke")
  config.model.update(image_size=size, **model)
  num_classes = 10 if config.model.conditional else None
  return config, DiffusionFamily(config, DataSpec.of_images(size, 1, num_classes))
