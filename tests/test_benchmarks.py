"""The benchmark scripts still run, at tiny settings: a change to imgen must not
break them unnoticed. Their numbers are for BENCHMARKS.md, not checked here.
That the PyTorch peers have imgen's parameter counts is checked by the peer
benchmarks themselves before they time anything (benchmarks/peer_counts.py):
they need torch, which the test install leaves out."""

import os
import subprocess
import sys

from helpers import ROOT
import jax
import jax.numpy as jnp


def _run(data_dir, *args):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "TFDS_DATA_DIR": data_dir}
  return subprocess.run(
    [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
  )


def test_the_suite_measures_a_family(data_dir):
  """The VAE: every measurement of the suite, sampling and sample features included."""
  args = ["--families=vae", "--sizes=28", "--steps=1", "--pipeline_batches=2"]
  args += ["--pipeline_threads=1"]
  result = _run(data_dir, "benchmarks/suite.py", *args)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [line for line in result.stdout.splitlines() if line.startswith("| vae | 28x28 |")]
  threads, sampling, features = rows[0].split("|")[8:11] if rows else ("-", "-", "-")
  assert sampling.strip() != "-" and features.strip() != "-", result.stdout + result.stderr[-3000:]
  assert threads.strip().startswith("1: "), threads  # --pipeline_threads=1 and the default.


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
  assert "| U-Net 64x64x3 depth 2 width 4 batch deep supervision 3.0 | 4 |" in result.stdout
  assert "| input pipeline, digit_scenes/tiny 64x64 + masks | 4 |" in result.stdout


def test_the_distillation_benchmark_runs(data_dir):
  """Its own untrained teacher: the step, the student's and the teacher's images/s."""
  args = ["--variant=smoke", "--rounds=1", "--steps=1", "--notorch", "--sampling=1"]
  result = _run(data_dir, "benchmarks/distill_step.py", *args, "--sample_batch=4", "--teacher")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "| consistency distillation, U-Net 28x28 ch8 | 8 |" in result.stdout, result.stdout
  assert "| student, consistency sampler | 1 | 4 |" in result.stdout
  assert "| teacher, ddim sampler | 5 | 4 |" in result.stdout


def test_the_peer_benchmark_runs(data_dir):
  args = ["--families=cnn", "--sizes=28", "--steps=1", "--rounds=1", "--notorch"]
  result = _run(data_dir, "benchmarks/peers.py", *args, "--steps_per_dispatch=1")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "| cnn | 28x28 | 64 | 1 |" in result.stdout


def test_the_accelerator_benchmark_runs_on_cpu(data_dir, tmp_path):
  """`--smoke` on two rows: a default family through its data, a paper network on
  random batches; in bfloat16 (float32 is the same code with another dtype),
  with XLA's FLOP count (no peak is known for a CPU, so no MFU), the table written."""
  out = tmp_path / "accelerator.md"
  args = ["--smoke", "--only=gan,dcgan64", "--dtypes=bfloat16", "--steps=1", f"--out={out}"]
  result = _run(data_dir, "benchmarks/accelerator.py", *args)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| ")]
  rows = [[cell.strip() for cell in row] for row in rows[1:]]  # After the header.
  assert [row[:2] for row in rows] == [["gan", "bfloat16"], ["dcgan64", "bfloat16"]], result.stdout
  for row in rows:
    assert float(row[3].replace(",", "")) > 0 and float(row[6]) > 0, row  # images/s, GFLOP.
    assert row[7] == "-", row  # MFU: no peak for a CPU.
  assert all(line in result.stdout for line in out.read_text().splitlines()[2:]), result.stdout


def test_xlas_flop_count_is_a_matmuls_2mnk_and_its_memory_the_arrays():
  """The counts behind the accelerator benchmark's MFU and memory columns,
  against the arithmetic of a matrix product."""
  from benchmarks import timing  # pylint: disable=g-import-not-at-top

  a, b = jnp.ones((64, 32)), jnp.ones((32, 16))
  flops, peak = timing.program_costs(jax.jit(jnp.matmul).lower(a, b).compile())
  assert flops == 2 * 64 * 32 * 16
  assert peak >= 4 * (64 * 32 + 32 * 16 + 64 * 16)  # Both inputs and the output, float32.


def test_the_trainer_benchmark_compares_the_logged_rate_with_the_fixed_batch(data_dir):
  args = ["--smoke", "--configs=vae", "--rounds=1", "--seconds=1"]
  result = _run(data_dir, "benchmarks/trainer.py", *args)
  assert result.returncode == 0, result.stderr[-3000:]
  (row,) = [line for line in result.stdout.splitlines() if "configs/vae.py" in line]
  trainer, fixed, ratio = (float(c.strip(" *")) for c in row.split("|")[5:8])
  assert trainer > 0 and fixed > 0 and abs(ratio - trainer / fixed) < 1e-2 * ratio


def test_the_profile_names_each_xla_operation_by_opcode_and_jax_op():
  """benchmarks/profile_step.py's reading of a compiled module: every
  instruction with its opcode and the JAX operation it came from."""
  from benchmarks import profile_step  # pylint: disable=g-import-not-at-top

  def f(x, w):
    y = jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return jax.nn.silu(y).sum()

  x, w = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4))
  names = profile_step.hlo_instructions(jax.jit(jax.grad(f, 1)).lower(x, w).compile().as_text())
  convolutions = [op for opcode, op in names.values() if opcode == "convolution"]
  assert any("conv_general_dilated" in op for op in convolutions), names
  assert profile_step.category("convolution", "") == "convolutions"
  assert (
    profile_step.category("fusion", "jit(f)/jvp(UNet)/ResBlock_0/GroupNorm_0/sub") == "GroupNorm"
  )
  assert profile_step.category("fusion", "jit(f)/adam/mul") == "optimizer, EMA, loss, guard"
