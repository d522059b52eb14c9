"""Throughput of text- and speech-conditioned diffusion (configs/text_to_image.py,
configs/speech_to_image.py): the train step side by side with its PyTorch
peer, the condition encoders alone, and guided sampling.

  python benchmarks/multimodal_step.py --torch --rounds=3                 # both default configs
  python benchmarks/multimodal_step.py --modality=text --torch --rounds=3 --sampling=50
  python benchmarks/multimodal_step.py --modality=speech --torch --rounds=3 --sampling=50
  python benchmarks/multimodal_step.py --modality=text --steps_per_dispatch=1 --noencoders

Each modality is its default config's family on one fixed synthetic batch of
`--batch_size` rows (default: the config's, 32 for text and 64 for speech):
random images in [-1, 1] and,
for text, 4 tokenised captions (`imgen.data.captions`) of a random layout per
row; for speech, int16 clips of `speech.CLIP_SAMPLES` samples shaped like
speech (a voiced harmonic tone under an envelope, silence around it). The
step is timed as the trainer runs it: behind the non-finite guard, with the
config's `train.steps_per_dispatch` steps per call (`--steps_per_dispatch`
overrides it); it draws one of each row's captions, or computes the clips'
log-mel spectrograms, drops the condition with probability 0.1, and updates
the EMA. The PyTorch peer (`--torch`, benchmarks/torch_unet.py's
`conditioned_steps_per_second`) is the same network and step in PyTorch eager.
`--encoders` also times the encoders alone, forward and backward of the mean
square of their output on the batch's first captions or the clips' log-mel
(and, for speech, the log-mel itself, forward). imgen and PyTorch alternate
`rounds` times in one process (same threads, same machine state) and the
ratio of their medians is printed.

`--sampling` lists DDIM step counts (and/or `ddpm`, ancestral over all T
levels) to time sampling for: one call of `--sample_batch` images with the
config's guidance scale (3: two network passes per level), conditioned on
the config's prompt rows (text) or synthetic clips (speech), compile
excluded. Prints markdown rows for BENCHMARKS.md.
"""

import copy
import os
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import peer_counts  # noqa: E402
from benchmarks import timing  # noqa: E402
from benchmarks import torch_unet  # noqa: E402
from configs import common  # noqa: E402
from imgen import families  # noqa: E402
from imgen.core import parallel  # noqa: E402
from imgen.core import runtime  # noqa: E402
from imgen.data import captions  # noqa: E402
from imgen.data import speech  # noqa: E402
from imgen.data.spec import IMAGE  # noqa: E402
from imgen.data.spec import TENSOR  # noqa: E402
from imgen.data.spec import DataSpec  # noqa: E402
from imgen.data.spec import Field  # noqa: E402
from imgen.evaluation.evaluate import make_sampler  # noqa: E402
from imgen.methods import audio  # noqa: E402
from imgen.models import compute_dtype  # noqa: E402

MODALITIES = {"text": "text_to_image", "speech": "speech_to_image"}
flags.DEFINE_enum("modality", "all", [*MODALITIES, "all"], "Which conditioned family.")
flags.DEFINE_integer("batch_size", None, "Global train batch (default: the config's).")
flags.DEFINE_integer("steps", 10, "Timed train steps per round (rounded up to whole calls).")
flags.DEFINE_integer("steps_per_dispatch", None, "Steps per call (default: the config's).")
flags.DEFINE_integer("rounds", 1, "Alternating imgen/PyTorch rounds.")
flags.DEFINE_bool("torch", False, "Also time the PyTorch peer.")
flags.DEFINE_bool("encoders", True, "Also time the condition encoders alone.")
flags.DEFINE_integer("encoder_steps", 20, "Timed encoder calls per round.")
flags.DEFINE_list("sampling", [], "DDIM step counts and/or 'ddpm' to time sampling for.")
flags.DEFINE_integer("sample_batch", 100, "Images per sampling call.")
FLAGS = flags.FLAGS


def _config(modality: str):
  config = common.default_config(MODALITIES[modality])
  if FLAGS.batch_size:
    config.train.batch_size = FLAGS.batch_size
  if FLAGS.steps_per_dispatch:
    config.train.steps_per_dispatch = FLAGS.steps_per_dispatch
  return config


def _spec(modality: str, config) -> tuple[DataSpec, int]:
  """The DataSpec the family reads (no dataset needed) and the image channels."""
  size = config.model.image_size
  if modality == "text":  # scene_captions: 64x64x3 scenes resized to model.image_size.
    fields = {
      "image": Field(IMAGE, "image", (64, 64, 3), "uint8"),
      "captions": Field(TENSOR, "captions", (4, captions.TOKEN_LENGTH), "int32"),
    }
    return DataSpec(size, fields), 3
  fields = {
    "image": Field(IMAGE, "image", (size, size, 1), "uint8"),
    "audio": Field(TENSOR, "audio", (speech.CLIP_SAMPLES,), "int16"),
  }
  return DataSpec(size, fields), 1


def synthetic_captions(rng: np.random.Generator, n: int, per_row: int = 4) -> np.ndarray:
  """int32 (n, per_row, TOKEN_LENGTH): `per_row` train captions of one random layout per row."""
  rows = []
  for _ in range(n):
    digits = tuple(
      captions.Digit(
        int(rng.integers(10)),
        str(rng.choice(captions.COLOURS)),
        str(rng.choice(captions.SIZES)),
        str(rng.choice(captions.POSITION_NAMES)),
      )
      for _ in range(int(rng.integers(1, 5)))
    )
    layout = captions.Layout(str(rng.choice(captions.BACKGROUND_NAMES)), digits)
    rows.append([captions.encode(captions.caption(layout, rng)) for _ in range(per_row)])
  return np.asarray(rows, np.int32)


def synthetic_clips(rng: np.random.Generator, n: int) -> np.ndarray:
  """int32 (n, CLIP_SAMPLES) of int16 values: 0.4-1 s of a voiced tone (f0 90-250 Hz,
  20 harmonics falling as 1/h) under a Hann envelope, a little noise, centred in silence."""
  clips = np.zeros((n, speech.CLIP_SAMPLES), np.float64)
  for row in clips:
    length = int(rng.uniform(0.4, 1.0) * speech.SAMPLE_RATE)
    start = (speech.CLIP_SAMPLES - length) // 2
    time_s = np.arange(length) / speech.SAMPLE_RATE
    f0 = rng.uniform(90, 250) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 4) * time_s))
    phase = 2 * np.pi * np.cumsum(f0) / speech.SAMPLE_RATE
    tone = sum(np.sin(h * phase) / h for h in range(1, 21)) + 0.05 * rng.normal(size=length)
    row[start : start + length] = tone * np.hanning(length)
  peak = rng.uniform(4000, 16000, (n, 1)) / np.maximum(np.abs(clips).max(axis=1, keepdims=True), 1)
  return np.clip(np.round(clips * peak), -32768, 32767).astype(np.int32)


def _per_device(x: np.ndarray) -> np.ndarray:
  n = jax.local_device_count()
  return x.reshape(n, x.shape[0] // n, *x.shape[1:])


def _jax_rate(fn, *args):
  """(run(calls) -> calls/s, compile s) of jitted `fn(*args)`."""
  args = jax.device_put(args)
  t = time.perf_counter()
  jax.block_until_ready(fn(*args))
  compile_s = time.perf_counter() - t

  def run(calls: int) -> float:
    jax.block_until_ready(fn(*args))  # Warm-up, untimed.
    t = time.perf_counter()
    for _ in range(calls):
      out = fn(*args)
    jax.block_until_ready(out)
    return calls / (time.perf_counter() - t)

  return run, compile_s


def _encoder_runs(family, config, modality: str, inputs: np.ndarray):
  """{name: (imgen run, compile s, PyTorch rate())} of the encoders alone."""
  steps = FLAGS.encoder_steps
  encoder = family.make_encoder(config.condition, compute_dtype(config.model.dtype))

  def grad_of(x):
    params = encoder.init(jax.random.key(0), jnp.asarray(x))["params"]
    loss = lambda p, x: jnp.mean(encoder.apply({"params": p}, x)[0] ** 2)
    return _jax_rate(jax.jit(jax.grad(loss)), params, x)

  c = config.condition
  if modality == "text":
    tokens = inputs[:, 0]
    run, compile_s = grad_of(tokens)
    name = f"text encoder w{c.width} depth {c.depth}, {tokens.shape[1]} tokens, fwd+bwd"
    peer = lambda: torch_unet.encoder_steps_per_second(config, tokens, steps=steps)
    return {name: (run, compile_s, peer)}
  mel_fn = jax.jit(lambda a: audio.log_mel(a.astype(jnp.float32) / 32768.0, **family.mel))
  run_mel, compile_mel = _jax_rate(mel_fn, inputs)
  mel = np.array(mel_fn(inputs))
  run, compile_s = grad_of(mel)
  frames, mels = mel.shape[1:]
  return {
    f"log-mel, {inputs.shape[1]} samples -> {frames}x{mels}, fwd": (
      run_mel,
      compile_mel,
      lambda: torch_unet.log_mel_per_second(config, inputs, steps=steps),
    ),
    f"audio encoder w{c.width}, {frames}x{mels} log-mel, fwd+bwd": (
      run,
      compile_s,
      lambda: torch_unet.encoder_steps_per_second(config, mel, steps=steps),
    ),
  }


def sampling_rate(config, spec: DataSpec, sampler_spec: str, rows) -> tuple[float, float]:
  """(images/s, compile s) of one guided sampling call of `sample_batch` images."""
  config = copy.deepcopy(config)
  if sampler_spec == "ddpm":
    config.sample.sampler = "ddpm"
  else:
    config.sample.update(sampler="ddim", steps=int(sampler_spec))
  family = families.FAMILIES[config.family](config, spec)
  state = parallel.replicate(family.init_state(jax.random.key(0)))
  sampler = make_sampler(family, config.family, FLAGS.sample_batch)
  t = time.perf_counter()
  jax.block_until_ready(next(sampler(state, jax.random.key(1), FLAGS.sample_batch, rows)))
  first = time.perf_counter() - t
  t = time.perf_counter()
  jax.block_until_ready(next(sampler(state, jax.random.key(2), FLAGS.sample_batch, rows)))
  elapsed = time.perf_counter() - t
  return FLAGS.sample_batch / elapsed, first - elapsed


def _row(name, batch, rates, compile_s, peer_rates, images: bool) -> str:
  rate = statistics.median(rates)
  row = f"| {name} | {batch} | {rate:.3f} |" + (f" {rate * batch:.1f} |" if images else "")
  row += f" {compile_s:.1f} |"
  if peer_rates:
    peer = statistics.median(peer_rates)
    return row + f" {peer:.3f} | {rate / peer:.2f} |"
  return row + " - | - |"


def measure(modality: str) -> tuple[list[str], list[str], list[str]]:
  """(train rows, encoder rows, sampling rows) of one modality."""
  config = _config(modality)
  spec, channels = _spec(modality, config)
  family = families.FAMILIES[config.family](config, spec)
  m, c = config.model, config.condition
  batch, per_call = config.train.batch_size, config.train.steps_per_dispatch
  if batch % jax.local_device_count():
    raise app.UsageError(f"--batch_size={batch}: use a multiple of {jax.local_device_count()}.")
  if FLAGS.torch:  # A ratio only against the same network.
    import torch  # pylint: disable=g-import-not-at-top

    peer_counts.check_conditioned(torch, config, spec)
  rng = np.random.default_rng(0)
  size = m.image_size
  images = rng.uniform(-1, 1, (batch, size, size, channels)).astype(np.float32)
  if modality == "text":
    field, inputs = "captions", synthetic_captions(rng, batch)
    encoder = f"text encoder w{c.width} depth {c.depth}"
  else:
    field, inputs = "audio", synthetic_clips(rng, batch)
    encoder = f"log-mel + audio encoder w{c.width}"
  run, compile_s = timing.trainer_step_runner(
    family, _per_device(images), per_call, **{field: _per_device(inputs)}
  )
  print(f"{config.family}: first call (compile) {compile_s:.1f}s", flush=True)
  encoders = _encoder_runs(family, config, modality, inputs) if FLAGS.encoders else {}
  rates = {"step": ([], [])} | {name: ([], []) for name in encoders}
  for r in range(FLAGS.rounds):
    rates["step"][0].append(run(FLAGS.steps))
    if FLAGS.torch:
      rates["step"][1].append(
        torch_unet.conditioned_steps_per_second(config, images, inputs, steps=FLAGS.steps)
      )
    for name, (run_encoder, _, peer) in encoders.items():
      rates[name][0].append(run_encoder(FLAGS.encoder_steps))
      if FLAGS.torch:
        rates[name][1].append(peer())
    line = ", ".join(
      f"{k} imgen {v[0][-1]:.2f}" + (f" PyTorch {v[1][-1]:.2f}" if v[1] else "")
      for k, v in rates.items()
    )
    print(f"{config.family} round {r}: {line} steps/s", flush=True)
  name = (
    f"{config.family}: U-Net {size}x{size}x{channels} ch{m.channels}, cross-attention at "
    f"{tuple(m.cross_attention_resolutions)}, {encoder} ({per_call} steps per call)"
  )
  train = [_row(name, batch, rates["step"][0], compile_s, rates["step"][1], True)]
  encoder_rows = [
    _row(k, batch, rates[k][0], compile_k, rates[k][1], False)
    for k, (_, compile_k, _) in encoders.items()
  ]
  sampling = []
  if FLAGS.sampling:
    if modality == "text":  # The config's prompts, one per 8 rows.
      rows = family.condition_rows(FLAGS.sample_batch)
    else:
      rows = synthetic_clips(np.random.default_rng(1), FLAGS.sample_batch)
    for sampler in FLAGS.sampling:
      rate, compile_sampler = sampling_rate(config, spec, sampler, rows)
      label = "DDPM ancestral, 1000 steps" if sampler == "ddpm" else f"DDIM, {sampler} steps"
      scale = config.sample.guidance_scale
      sampling.append(
        f"| {config.family} | {label}, guidance {scale:g} | {FLAGS.sample_batch} | {rate:.2f} "
        f"| {compile_sampler:.1f} |"
      )
      print(sampling[-1], flush=True)
  return train, encoder_rows, sampling


def main(argv):
  runtime.configure_xla()
  del argv
  modalities = list(MODALITIES) if FLAGS.modality == "all" else [FLAGS.modality]
  train, encoders, sampling = [], [], []
  for modality in modalities:
    rows = measure(modality)
    train += rows[0]
    encoders += rows[1]
    sampling += rows[2]
  print(f"\nJAX {jax.__version__}, {jax.device_count()} {jax.default_backend()} device(s)")
  print(
    "| model | batch | imgen steps/s | imgen images/s | compile s | PyTorch steps/s "
    "| imgen/PyTorch |"
  )
  print("\n".join(train))
  if encoders:
    print("| encoder alone | batch | imgen calls/s | compile s | PyTorch calls/s | imgen/PyTorch |")
    print("\n".join(encoders))
  if sampling:
    print("| model | sampler | batch | images/s | compile s |")
    print("\n".join(sampling))


if __name__ == "__main__":
  app.run(main)
