"""The family contract: a family defined here, registered here, runs through
main.py's code path (`modes.run`) without any change to the trainer, the
modes or a list: train, resume, evaluate, sample."""

import json
import logging
import os
import subprocess
import sys

import flax.linen as nn
from helpers import ROOT
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from imgen import families
from imgen import modes
from imgen.core import checkpoints
from imgen.core import parallel
from imgen.core.errors import ConfigError
from imgen.core.optim import make_optimizer
from imgen.core.train_state import SingleNetworkState
from imgen.core.train_state import TrainState
from imgen.data import VALID
from imgen.data import DataSpec
from imgen.evaluation.evaluate import host_samples
from imgen.evaluation.evaluate import make_sampler
from imgen.evaluation.experiment import Experiment
from imgen.families import Evaluates
from imgen.families import Family
from imgen.families import Generates


class Autoencoder(nn.Module):
  """A plain dense autoencoder of (H, W, C) images in [-1, 1]."""

  shape: tuple[int, int, int]
  latent_dim: int

  def setup(self):
    self.encoder = nn.Dense(self.latent_dim)
    self.decoder = nn.Dense(int(np.prod(self.shape)))

  def encode(self, x):
    return self.encoder(x.reshape(x.shape[0], -1))

  def decode(self, z):
    return jnp.tanh(self.decoder(z)).reshape((-1, *self.shape))

  def __call__(self, x, train: bool = False):
    del train
    return self.decode(self.encode(x))


class AutoencoderFamily(Family, Evaluates, Generates):
  """Squared-error autoencoder; samples decode N(0, 1) codes."""

  def __init__(self, config, spec):
    self.image = spec.image
    self.model = Autoencoder(self.image.shape, config.model.latent_dim)
    self.optimizer = make_optimizer(config.optim, config.train.num_steps, "optim")

  def init_state(self, key):
    x = jnp.zeros((1, *self.image.shape))
    return SingleNetworkState.create(TrainState.create(self.model, key, x, self.optimizer))

  def make_train_step(self):
    model = self.model

    def train_step(state, batch, key):
      del key

      def loss_fn(params):
        recon = model.apply({"params": params}, batch["image"])
        return jnp.mean((recon - batch["image"]) ** 2), ()

      (loss, _), grads = parallel.value_and_mean_grad(loss_fn)(state.net.params)
      metrics = {"mse": lax.pmean(loss, parallel.AXIS), **state.net.update_metrics(grads)}
      return state.replace(step=state.step + 1, net=state.net.apply_gradients(grads=grads)), metrics

    return train_step

  def headline(self, metrics):
    return {"mse": metrics["mse"]}

  def make_eval_step(self):
    model = self.model

    def eval_step(state, batch, key):
      del key
      recon = model.apply({"params": state.net.eval_params}, batch["image"])
      error = jnp.mean((recon - batch["image"]) ** 2, axis=(1, 2, 3))
      sums = {"squared_error": jnp.sum(error * batch[VALID]), "count": jnp.sum(batch[VALID])}
      return lax.psum(sums, parallel.AXIS)

    return eval_step

  def summarize_eval(self, sums):
    count = float(sums["count"])
    return {"mse": float(sums["squared_error"]) / count, "num_images": count}, {}

  def generate(self, state, key, n, condition=None):
    z = parallel.global_normal(key, n, (self.model.latent_dim,))
    images = self.model.apply({"params": state.net.eval_params}, z, method=Autoencoder.decode)
    if condition is not None:  # A stand-in for a conditional model: shift by the label.
      images = images + condition[:, None, None, None]
    return images

  def show(self, state, key, batch):
    recon = self.model.apply({"params": state.net.eval_params}, batch["image"])
    return {"reconstructions": np.concatenate([batch["image"], np.asarray(recon)])}


def _config(data_dir, cnn_workdir, stats_dir, num_steps=6):
  config = ml_collections.ConfigDict()
  config.family = "autoencoder"
  config.seed = 0
  config.data = common.data()
  config.data.data_dir = data_dir
  config.model = ml_collections.ConfigDict(dict(image_size=28, latent_dim=8))
  config.optim = common.optimizer(1e-3, ema_decay=0.5, warmup_steps=2, schedule="cosine")
  config.train = common.train(num_steps=num_steps, checkpoint_every=3)
  config.eval = common.evaluation(
    every_steps=3, sample_every=3, batch_size=100, metrics="fid,kid", best_metric="mse"
  )
  common.shrink_for_smoke(config)
  config.train.num_steps = num_steps
  config.eval.update(cnn_workdir=cnn_workdir, stats_dir=stats_dir)
  return config


@pytest.fixture
def registered(monkeypatch):
  monkeypatch.setitem(families.FAMILIES, "autoencoder", AutoencoderFamily)


def test_a_family_defined_in_a_test_trains_resumes_evaluates_and_samples(
  registered, data_dir, cnn_workdir, tmp_path, caplog
):
  del registered
  config = lambda **kw: _config(data_dir, cnn_workdir, str(tmp_path / "stats"), **kw)
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  logged = modes.run("train", config(), straight)
  assert {"mse", "learning_rate", "grad_norm", "test/mse", "test/fid", "test/kid"} <= set(logged)
  assert all(np.isfinite(v) for v in logged.values())
  for name in ("samples", "reconstructions"):
    assert os.path.exists(os.path.join(straight, "samples", f"{name}_0000006.png")), name

  modes.run("train", config(num_steps=3), resumed)
  with caplog.at_level(logging.INFO):
    modes.run("train", config(), resumed)
  assert "Resuming from the checkpoint of step 3" in caplog.text

  def final(workdir):
    manager = checkpoints.make_manager(workdir, keep=1, create=False)
    target = Experiment.create(config()).family.init_state(jax.random.key(1))
    state, step = checkpoints.restore_latest(manager, target)
    manager.close()
    assert step == 6
    return state

  a, b = final(straight), final(resumed)
  assert int(a.net.step) == 6 and jax.tree.leaves(a.net.ema_params)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)  # Resumed bitwise, EMA and schedule included.

  record = modes.run("eval", config(), straight)
  assert record["results"] == {k: v for k, v in logged.items() if k.startswith("test/")}
  with open(os.path.join(straight, "eval", "step0000006_vs_test.json")) as f:
    assert json.load(f)["results"] == record["results"]
  with open(os.path.join(straight, "best", "best.json")) as f:
    assert json.load(f)["metric"] == "mse"

  out = modes.run("sample", config(), straight)["folder"]
  assert {"samples.npz", "samples_000.png", "reconstructions.png"} <= set(os.listdir(out))
  with np.load(os.path.join(out, "samples.npz")) as f:
    assert f["images"].shape == (config().eval.num_samples, 28, 28, 1)


def test_an_incomplete_family_fails_when_it_is_built():
  class NoStep(Family, Generates):
    def __init__(self, config, spec):
      del config, spec

    def init_state(self, key):
      return None

    def headline(self, metrics):
      return metrics

    def show(self, state, key, batch):
      return {}

  with pytest.raises(TypeError, match=r"abstract methods.*generate.*make_train_step"):
    NoStep(None, None)


def test_unknown_families_and_modes_list_the_known_ones(data_dir, tmp_path):
  config = _config(data_dir, "", "")
  with pytest.raises(ConfigError, match=r"family 'autoencoder' is unknown; known: \["):
    modes.run("train", config, str(tmp_path))
  with pytest.raises(ConfigError, match=r"--mode=paint is unknown; known: \[.compose., .eval."):
    modes.run("paint", config, str(tmp_path))


def conditioned_samples() -> np.ndarray:
  """Ten samples of a fresh autoencoder, drawn without and with labels 0, 100, ..., 900."""
  config = ml_collections.ConfigDict(
    dict(model=dict(latent_dim=4), optim=common.optimizer(1e-3), train=dict(num_steps=1))
  )
  family = AutoencoderFamily(config, DataSpec.of_images(8, 1))
  state = parallel.replicate(family.init_state(jax.random.key(0)))
  samples = make_sampler(family, "autoencoder", 8)  # Batches of 8: the labels wrap.
  plain = host_samples(samples(state, jax.random.key(1), 10), 10)
  shifted = host_samples(samples(state, jax.random.key(1), 10, np.arange(10) * 100.0), 10)
  return np.stack([plain, shifted])


def test_conditioned_samples_get_their_rows_on_one_and_four_devices(tmp_path):
  """Row j of the samples is drawn given condition[j], on any number of devices."""
  out = str(tmp_path / "four.npy")
  env = {**os.environ, "JAX_NUM_CPU_DEVICES": "4", "JAX_PLATFORMS": "cpu"}
  env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])
  code = f"import numpy, test_family_contract as t; numpy.save({out!r}, t.conditioned_samples())"
  done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-2000:]
  plain, shifted = conditioned_samples()  # This process: one device.
  labels = (np.arange(10) * 100.0)[:, None, None, None]
  np.testing.assert_allclose(shifted - plain, np.broadcast_to(labels, plain.shape), atol=1e-4)
  np.testing.assert_allclose(np.load(out), np.stack([plain, shifted]), atol=1e-6)


def test_the_sampler_refuses_families_that_make_no_images():
  class Classifier:
    pass

  with pytest.raises(ConfigError, match="The cnn family makes no images"):
    make_sampler(Classifier(), "cnn", 8)
