"""The benchmark scripts still run, at tiny settings: a change to imgen must not
break them unnoticed. Their numbers are for BENCHMARKS.md, not checked here."""

import os
import subprocess
import sys

from helpers import ROOT
import jax
import pytest


def _run(data_dir, *args):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "TFDS_DATA_DIR": data_dir}
  return subprocess.run(
    [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
  )


def test_the_suite_measures_a_family(data_dir):
  """The VAE: every measurement of the suite, sampling and sample features included."""
  args = ["--families=vae", "--sizes=28", "--steps=1", "--pipeline_batches=2"]
  result = _run(data_dir, "benchmarks/suite.py", *args)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [line for line in result.stdout.splitlines() if line.startswith("| vae | 28x28 |")]
  sampling, features = rows[0].split("|")[8:10] if rows else ("-", "-")
  assert sampling.strip() != "-" and features.strip() != "-", result.stdout + result.stderr[-3000:]


def test_the_train_step_benchmark_runs(data_dir):
  args = ["--image_size=16", "--channels=1", "--width=8", "--latent_dim=8", "--steps=1"]
  result = _run(data_dir, "benchmarks/train_step.py", *args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "| DCGAN 16x16x1 w8 |" in result.stdout


def test_the_sngan_step_benchmark_runs(data_dir):
  args = ["--notorch", "--variants=wgan_gp", "--g_width=8", "--d_width=8", "--batch_size=4"]
  result = _run(data_dir, "benchmarks/sngan_step.py", *args, "--n_dis=2", "--steps=1", "--rounds=1")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "| wgan_gp | 8/8 | 4 | 2 |" in result.stdout


def test_the_segmentation_step_benchmark_runs(data_dir):
  args = ["--width=4", "--depth=2", "--batch_size=4", "--steps=1", "--pipeline"]
  args += ["--dataset=digit_scenes/tiny", "--pipeline_batches=2"]
  result = _run(data_dir, "benchmarks/segment_step.py", *args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "| U-Net 64x64x3 depth 2 width 4 batch | 4 |" in result.stdout
  assert "| input pipeline, digit_scenes/tiny 64x64 + masks | 4 |" in result.stdout


def test_the_peer_benchmark_runs(data_dir):
  args = ["--families=cnn", "--sizes=28", "--steps=1", "--rounds=1", "--notorch"]
  result = _run(data_dir, "benchmarks/peers.py", *args, "--steps_per_dispatch=1")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "| cnn | 28x28 | 64 | 1 |" in result.stdout


@pytest.mark.parametrize("size", [28, 64])
def test_the_pytorch_peers_have_imgens_parameter_counts(size):
  """The peers are the default configs' networks: as many parameters, layer for
  layer (the VAE's Gaussian log-scale aside, unused by the Bernoulli default)."""
  torch = pytest.importorskip("torch")
  from benchmarks import torch_cnn
  from benchmarks import torch_dcgan
  from benchmarks import torch_vae
  from configs import common
  from imgen import families
  from imgen.data import DataSpec

  count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
  for family in ("gan", "vae", "cnn"):
    config = common.default_config(family)
    config.model.image_size = size
    m = config.model
    spec = DataSpec.of_images(size, 1, m.num_classes if family == "cnn" else None)
    state = jax.eval_shape(families.FAMILIES[family](config, spec).init_state, jax.random.key(0))
    if family == "gan":
      ours = count(state.g.params) + count(state.d.params)
      g, d = torch_dcgan._build_models(torch, size, 1, m.g_width, m.d_width)
      theirs = sum(p.numel() for net in (g, d) for p in net.parameters())
    elif family == "vae":
      ours = count({k: v for k, v in state.net.params.items() if k != "log_scale"})
      theirs = torch_vae.parameter_count(size, 1, m.latent_dim, m.width)
    else:
      ours = count(state.net.params)
      theirs = torch_cnn.parameter_count(size, 1, m.num_classes, m.width)
    assert ours == theirs, family


@pytest.mark.parametrize("family", ["text_to_image", "speech_to_image"])
def test_the_conditioned_pytorch_peers_have_imgens_parameter_counts(family):
  """The text- and speech-to-image peers are the default configs' networks:
  encoder, null context and U-Net with its cross-attention, as many parameters."""
  torch = pytest.importorskip("torch")
  from benchmarks import torch_unet
  from configs import common
  from imgen import families
  from imgen.data import captions
  from imgen.data.spec import IMAGE
  from imgen.data.spec import TENSOR
  from imgen.data.spec import DataSpec
  from imgen.data.spec import Field

  count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
  config = common.default_config(family)
  if family == "text_to_image":
    image = Field(IMAGE, "image", (64, 64, 3), "uint8")
    condition = {"captions": Field(TENSOR, "captions", (4, captions.TOKEN_LENGTH), "int32")}
  else:
    image = Field(IMAGE, "image", (28, 28, 1), "uint8")
    condition = {"audio": Field(TENSOR, "audio", (33075,), "int16")}
  spec = DataSpec(config.model.image_size, {"image": image, **condition})
  state = jax.eval_shape(families.FAMILIES[family](config, spec).init_state, jax.random.key(0))
  params = state.net.params
  peer = torch_unet.build_conditioned(torch, config, image.stored_shape[-1])
  parts = {"encoder": peer.encoder, "unet": peer.unet}
  for name, module in parts.items():
    assert count(params[name]) == sum(p.numel() for p in module.parameters()), name
  assert count(params) == sum(p.numel() for p in peer.parameters())
