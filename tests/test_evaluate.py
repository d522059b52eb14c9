"""Sample-quality metrics in training, --mode=eval and --mode=sample, run small."""

import json
import logging
import os
import pathlib
import subprocess

from helpers import ROOT
from helpers import main_command
from helpers import shared_folder
from helpers import shared_training
from helpers import smoke_config
import numpy as np
import pytest

from imgen import modes
from imgen.core.errors import ConfigError
from imgen.evaluation import evaluate
from imgen.evaluation import features
from imgen.modes import train

METRICS = ("fid", "kid", "kid_std", "is", "is_std", "precision", "recall", "num_samples")


def _config(family, data_dir, cnn_workdir, tmp_path, **eval_overrides):
  config = smoke_config(family, data_dir)
  config.eval.update(
    metrics="fid,kid,is,pr", cnn_workdir=cnn_workdir, stats_dir=str(tmp_path / "stats")
  )
  config.eval.update(eval_overrides)
  return config


EMA = "--config.optim.g.ema_decay=0.5"  # The GAN samples from EMA weights, standing statistics.


@pytest.fixture(scope="session")
def gan_run(data_dir, cnn_workdir):
  """A smoke GAN with an EMA, evaluated with every metric (shared by the workers)."""
  config = _config("gan", data_dir, cnn_workdir, pathlib.Path(shared_folder("gan-metrics")))
  config.optim.g.ema_decay = 0.5
  return config, *shared_training("gan-metrics", config)


def test_training_logs_metrics_and_keeps_the_best_checkpoint(gan_run):
  config, workdir, results = gan_run
  assert {f"test/{m}" for m in METRICS} <= set(results), sorted(results)
  assert results["test/num_samples"] == config.eval.num_samples
  with open(os.path.join(workdir, "best", "best.json")) as f:
    best = json.load(f)
  assert best["metric"] == "fid" and best["mode"] == "min" and best["step"] in (3, 6)
  assert os.listdir(os.path.join(workdir, "best")).count(str(best["step"])) == 1
  if best["step"] == 6:
    assert best["value"] == results["test/fid"]
  else:
    assert best["value"] < results["test/fid"]


def test_eval_mode_repeats_the_numbers_training_logged(gan_run):
  config, workdir, results = gan_run
  record = modes.run("eval", config, workdir)
  assert record["step"] == 6
  assert record["results"] == {k: v for k, v in results.items() if k.startswith("test/")}
  with open(os.path.join(workdir, "eval", "step0000006_vs_test.json")) as f:
    assert json.load(f)["results"] == record["results"]

  untrained = config.copy_and_resolve_references()
  untrained.eval.checkpoint_step = 0
  ceiling = modes.run("eval", untrained, workdir)["results"]
  assert ceiling["test/fid"] != results["test/fid"]

  best = config.copy_and_resolve_references()
  best.eval.best = True
  assert modes.run("eval", best, workdir)["step"] in (3, 6)

  missing = config.copy_and_resolve_references()
  missing.eval.checkpoint_step = 4
  with pytest.raises(ConfigError, match=r"no checkpoint of step 4; it has \[3, 6\]"):
    modes.run("eval", missing, workdir)


def test_real_split_against_itself_is_the_known_floor(data_dir, cnn_workdir, tmp_path, monkeypatch):
  config = _config("gan", data_dir, cnn_workdir, tmp_path, real_split="test")
  results = modes.run("eval", config, str(tmp_path / "floor"))["results"]
  assert abs(results["test/fid"]) < 1e-6
  assert results["test/precision"] == 1.0 and results["test/recall"] == 1.0
  assert results["test/num_samples"] == 1000

  # The second evaluation reads the cached features instead of computing them.
  (cached,) = os.listdir(tmp_path / "stats")
  assert cached.startswith("embedded_mnist-1.0.0-test-28px1c-pad-cnn-")

  def fail(*args):
    raise AssertionError("features recomputed")

  monkeypatch.setattr(evaluate.SampleQuality, "_features", fail)
  again = modes.run("eval", config, str(tmp_path / "floor"))["results"]
  assert again == results


def test_sample_mode_writes_grids_and_an_npz(gan_run, smoke_run):
  config, workdir, _ = gan_run
  config = config.copy_and_resolve_references()
  config.eval.update(num_samples=20, grid_samples=16)
  out = modes.run("sample", config, workdir)["folder"]
  assert sorted(os.listdir(out)) == [
    "record.json",
    "samples.npz",
    "samples_000.png",
    "samples_001.png",
  ]
  with np.load(os.path.join(out, "samples.npz")) as f:
    images = f["images"]
    assert images.shape == (20, 28, 28, 1) and images.dtype == np.uint8
    assert int(f["step"]) == 6
  assert images.std() > 0  # Not a constant image.
  config.eval.num_samples = 16  # Again, fewer: the first call's second grid is not left behind.
  modes.run("sample", config, workdir)
  assert [name for name in sorted(os.listdir(out)) if name.endswith(".png")] == ["samples_000.png"]

  vae, vae_workdir, _ = smoke_run("vae")
  vae_out = modes.run("sample", vae, vae_workdir)["folder"]
  for name in ("reconstructions.png", "interpolations.png", "samples.npz"):
    assert os.path.exists(os.path.join(vae_out, name)), name


def test_samples_do_not_depend_on_the_device_count(gan_run, data_dir):
  config, workdir, _ = gan_run
  env = {**os.environ, "JAX_NUM_CPU_DEVICES": "4", "JAX_PLATFORMS": "cpu"}
  four = os.path.join(workdir, "four")
  os.makedirs(four)
  os.symlink(os.path.join(workdir, "checkpoints"), os.path.join(four, "checkpoints"))
  cmd = main_command("gan", four, data_dir, "--mode=sample", EMA)
  result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "CpuDevice(id=3)" in result.stderr
  one = modes.run("sample", config, workdir)["folder"]
  with np.load(os.path.join(one, "samples.npz")) as a:
    with np.load(os.path.join(four, "samples", "step0000006", "samples.npz")) as b:
      difference = np.abs(a["images"].astype(int) - b["images"].astype(int))
  assert difference.max() <= 1 and difference.mean() < 1e-3  # Rounding at most.


def test_missing_feature_network(data_dir, tmp_path, caplog):
  absent = str(tmp_path / "no_cnn")
  config = _config("gan", data_dir, absent, tmp_path)
  with pytest.raises(ConfigError, match="holds no trained run.*configs/cnn.py"):
    modes.run("eval", config, str(tmp_path / "run"))
  # Training goes on without the metrics, and says so.
  with caplog.at_level(logging.WARNING):
    results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert "d_loss" in results and "test/fid" not in results
  assert "Sample-quality metrics (fid,kid,is,pr) are off" in caplog.text


def test_modes_fail_clearly(gan_run, data_dir, cnn_workdir, tmp_path):
  config = _config("gan", data_dir, cnn_workdir, tmp_path)
  with pytest.raises(ConfigError, match="has no checkpoints/ folder.*checkpoint_step=0"):
    modes.run("eval", config, str(tmp_path / "empty"))
  cnn = _config("cnn", data_dir, cnn_workdir, tmp_path)
  with pytest.raises(ConfigError, match="is for --mode=train,eval, not --mode=sample"):
    modes.run("sample", cnn, str(tmp_path))
  cnn.modes += ",sample"  # Past the config's own list, the family says why.
  with pytest.raises(ConfigError, match="cnn family makes no images"):
    modes.run("sample", cnn, str(tmp_path))
  not_a_cnn = _config("gan", data_dir, gan_run[1], tmp_path)
  with pytest.raises(ConfigError, match="holds a 'gan' run, not a 'cnn' one"):
    features.create(not_a_cnn.eval)
  unknown = _config("gan", data_dir, cnn_workdir, tmp_path, metrics="fid,lpips")
  with pytest.raises(ConfigError, match=r"names \['lpips'\]; known: fid, kid, is, pr"):
    modes.run("eval", unknown, gan_run[1])


def test_fingerprint_changes_with_any_weight():
  weights = {"a": np.zeros((3, 2), np.float32), "b": np.ones(4, np.float32)}
  changed = {"a": weights["a"].copy(), "b": weights["b"]}
  changed["a"][2, 1] = 1e-7
  assert features.fingerprint(weights) == features.fingerprint(dict(weights))
  assert features.fingerprint(weights) != features.fingerprint(changed)


def test_modes_of_a_run_need_its_workdir_and_training_gets_a_new_one():
  """What main.py asks before anything else: the modes that read a run need its --workdir."""
  for mode in ("eval", "sample"):
    with pytest.raises(ConfigError, match=f"--mode={mode} needs the --workdir of a run"):
      modes.choose_workdir(mode, None, "configs/gan.py:smoke")
  assert modes.choose_workdir("eval", "runs/x", "configs/gan.py") == "runs/x"
  new = modes.choose_workdir("train", None, "configs/gan.py:smoke")
  assert new.startswith(os.path.join("runs", "gan-")) and not os.path.exists(new)
