"""Text- and speech-conditioned diffusion: the conditioning path, guidance,
and the modes a user runs (sample with a prompt, prompts scored)."""

import json
import os

from helpers import needs_extra
from helpers import random_tree
from helpers import smoke_config
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io.wavfile

from imgen import modes
from imgen.core import parallel
from imgen.core.errors import ConfigError
from imgen.core.errors import DataError
from imgen.data import captions
from imgen.data import speech
from imgen.data.spec import IMAGE
from imgen.data.spec import LABEL
from imgen.data.spec import TENSOR
from imgen.data.spec import DataSpec
from imgen.data.spec import Field
from imgen.families.multimodal import SpeechToImageFamily
from imgen.families.multimodal import TextToImageFamily
from imgen.families.multimodal import parse_prompts
from imgen.methods import audio
from imgen.methods import layouts
from imgen.models import unet
from imgen.models.conditioned import AudioEncoder
from imgen.modes import prompts


def _text_family():
  config = smoke_config("text_to_image", "unused")
  spec = DataSpec(
    32,
    {
      "image": Field(IMAGE, "image", (64, 64, 3), "uint8"),
      "captions": Field(TENSOR, "captions", (4, captions.TOKEN_LENGTH), "int32"),
    },
  )
  return TextToImageFamily(config, spec)


def _tokens(*texts):
  return jnp.asarray(np.stack([captions.encode(t) for t in texts]))


@pytest.fixture(scope="session")
def text_model():
  family = _text_family()
  # Trained-looking weights: the zero-initialised last layers would hide the condition.
  shapes = jax.eval_shape(family.init_state, jax.random.key(0)).net.params
  return family, random_tree(shapes, jax.random.key(1), 0.3)


def test_guidance_scale_zero_is_the_unconditional_model(text_model):
  family, params = text_model
  x = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
  t = jnp.array([3, 15])
  cond = family.sample_condition(
    _tokens("a green 5 on grass", "a red 3 at the top on brick"), None, 2
  )

  @jax.jit  # One program for the four predictions.
  def predictions(params, x):
    unconditional = family.network(params, family.null_condition(cond))(x, t)
    scaled = [family.network(params, cond, scale)(x, t) for scale in (0.0, 1.0, 3.0)]
    return unconditional, *scaled

  unconditional, scale_0, conditional, guided = predictions(params, x)
  np.testing.assert_allclose(scale_0, unconditional, atol=1e-5)
  assert np.abs(np.asarray(conditional - unconditional)).max() > 1e-3
  np.testing.assert_allclose(guided, unconditional + 3 * (conditional - unconditional), atol=1e-4)


def test_unconditional_rows_ignore_their_text_and_conditional_rows_read_it(text_model):
  family, params = text_model
  x = jnp.broadcast_to(jax.random.normal(jax.random.key(3), (1, 32, 32, 3)), (2, 32, 32, 3))
  t = jnp.array([7, 7])
  texts = _tokens("a green 5 on grass", "a large blue 9 at the bottom left on the moon")
  eps = lambda keep: family.model.apply(
    {"params": params}, x, t, {"inputs": texts, "keep": jnp.array([keep, keep])}
  )
  dropped, kept = jax.jit(lambda: (eps(False), eps(True)))()
  np.testing.assert_array_equal(dropped[0], dropped[1])
  assert np.abs(np.asarray(kept[0] - kept[1])).max() > 1e-3


def test_cross_attention_ignores_masked_context_positions():
  net = unet.UNet(
    channels=8,
    channel_mults=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(),
    dropout=0.0,
    groups=4,
    cross_attention_resolutions=(16, 8),
    heads=2,
    axis_name=None,
  )
  x, t = jax.random.normal(jax.random.key(0), (2, 16, 16, 3)), jnp.array([1, 2])
  context = jax.random.normal(jax.random.key(1), (2, 5, 12))
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], bool)
  init = lambda: net.init(jax.random.key(2), x, t, context=context, context_mask=mask)
  params = random_tree(jax.eval_shape(init)["params"], jax.random.key(2), 0.1)
  garbage = jnp.where(mask[..., None], context, 1e3)
  out = lambda c: net.apply({"params": params}, x, t, context=c, context_mask=mask)
  plain, masked_garbage, changed = jax.jit(
    lambda: [out(c) for c in (context, garbage, context.at[:, 0].add(1.0))]
  )()
  np.testing.assert_allclose(plain, masked_garbage, atol=1e-6)
  assert np.abs(np.asarray(plain - changed)).max() > 1e-4


def test_the_audio_encoder_in_bfloat16_keeps_float32_parameters_and_close_outputs():
  """What model.dtype=bfloat16 adds in speech_to_image to text_to_image's step (whose
  bfloat16 run tests/test_train.py checks whole): the audio encoder's layers in bfloat16,
  each clip normalised in float32 first, so a log-mel's offset costs no precision. Fed
  bfloat16 log-mels instead, the outputs' mean error is ~3x this bound."""
  mel = -20.0 + 4.0 * jax.random.normal(jax.random.key(0), (2, 48, 32))
  full, half = AudioEncoder(width=16), AudioEncoder(width=16, dtype=jnp.bfloat16)
  params = jax.jit(full.init)(jax.random.key(1), mel)
  shapes = jax.eval_shape(half.init, jax.random.key(1), mel)
  assert {x.dtype for x in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
  (want, valid), (got, _) = full.apply(params, mel), half.apply(params, mel)
  assert got.dtype == jnp.bfloat16 and bool(valid.all())
  error = np.abs(np.asarray(got, np.float32) - np.asarray(want))
  assert error.mean() < 0.008 and error.max() < 0.05, (error.mean(), error.max())


def test_the_speech_condition_is_the_log_mel_of_the_clip():
  config = smoke_config("speech_to_image", "unused")
  spec = DataSpec(
    28,
    {
      "image": Field(IMAGE, "image", (28, 28, 1), "uint8"),
      "label": Field(LABEL, "label", (), "int64", 10),
      "audio": Field(TENSOR, "audio", (33075,), "int16"),
    },
  )
  family = SpeechToImageFamily(config, spec)
  clip = jax.random.randint(jax.random.key(0), (2, 33075), -3000, 3000)
  cond = family.sample_condition(clip, None, 2)
  np.testing.assert_allclose(
    cond["inputs"], audio.log_mel(clip / 32768.0, **config.condition.mel), rtol=1e-6
  )
  assert cond["inputs"].shape == (2, audio.num_frames(33075), 64)
  # In training each row's mel axis is stretched by its own factor in 1 +- mel_stretch.
  config.condition.mel_stretch = 0.15
  family = SpeechToImageFamily(config, spec)
  rows = {"audio": jnp.repeat(clip[:1], 24, axis=0)[None]}
  draw = lambda batch: family.train_condition(batch, jax.random.key(1), 24)
  stretched = np.asarray(jax.pmap(draw, axis_name=parallel.AXIS)(rows)["inputs"][0])
  plain, bands = np.asarray(cond["inputs"][0]), np.arange(64.0)

  def stretch(f):  # NumPy's: band b read at b * f, linearly between bands.
    at = np.clip(bands * f, 0, 63)
    low = np.floor(at).astype(int)
    return plain[:, low] * (1 - (at - low)) + plain[:, np.minimum(low + 1, 63)] * (at - low)

  found = []
  for row in stretched:  # The factor that explains each row: a coarse search, then a fine one.
    error = lambda f, row=row: np.abs(row - stretch(f)).max()
    best = min(np.linspace(0.8, 1.2, 801), key=error)
    best = min(best + np.linspace(-1e-3, 1e-3, 2001), key=error)
    assert error(best) < 1e-4 * np.abs(plain).max(), error(best)
    found.append(best)
  assert 0.85 - 1e-3 <= min(found) < 0.9 and 1.1 < max(found) <= 1.15 + 1e-3, found
  assert len(set(found)) == len(found), found


def test_text_sample_mode_with_prompts_and_prompts_mode(smoke_run):
  """--mode=sample with prompts and --mode=prompts, through `modes.run` as main.py runs them."""
  smoke, workdir, _ = smoke_run("text_to_image")
  config = smoke.copy_and_resolve_references()
  config.sample.prompt = "a green 5 on grass|a red 3 at the top left on brick|a white 0 on the moon"
  config.eval.num_samples = 24
  modes.run("sample", config, workdir)
  samples = np.load(os.path.join(workdir, "samples", "step0000006", "samples.npz"))["images"]
  assert samples.shape == (24, 32, 32, 3)
  _, judge, _ = smoke_run("judge")  # configs/judge.py:smoke reads 32x32 scenes.
  config = smoke.copy_and_resolve_references()
  config.prompts.judge_workdir = judge
  modes.run("prompts", config, workdir)
  with open(os.path.join(workdir, "prompts", "step0000006.json")) as f:
    record = json.load(f)
  seen = record["seen"]["num_prompts"]
  assert seen + record.get("held_out_combinations", {"num_prompts": 0})["num_prompts"] == 16
  assert record["held_out_phrasings"]["num_prompts"] == seen
  groups = [group for group in prompts.GROUPS if group in record]
  assert {"seen", "held_out_phrasings"} <= set(groups), sorted(record)
  for group in groups:  # Held-out combinations only where the 16 test scenes have one.
    for scores in (record[group]["samples"], record[group]["real_scenes"]):
      assert set(scores) == set(layouts.ATTRIBUTES)
      assert all(0.0 <= v <= 1.0 for v in scores.values()), scores
  assert np.isfinite(record["fid_judge_features"])


def test_speech_prompts_mode_classifies_samples_of_held_out_voices(smoke_run, cnn_workdir):
  needs_extra("speech_to_image")
  smoke, workdir, _ = smoke_run("speech_to_image")
  config = smoke.copy_and_resolve_references()
  config.eval.cnn_workdir = cnn_workdir
  modes.run("prompts", config, workdir)
  with open(os.path.join(workdir, "prompts", "step0000006.json")) as f:
    record = json.load(f)
  assert record["num_clips"] == 16 and 0.0 <= record["accuracy"] <= 1.0
  from imgen.data import speech  # pylint: disable=g-import-not-at-top

  held_out = {speech.VOICES.index(v) for v in speech.TEST_VOICES}
  assert {int(v) for v in record["accuracy_by_voice"]} <= held_out


def test_a_prompt_the_grammar_cannot_read_is_a_one_line_config_error():
  with pytest.raises(ConfigError, match="sample.prompt 'a purple dragon'") as e:
    parse_prompts("a green 5 on grass|a purple dragon")
  assert "\n" not in str(e.value)
  assert parse_prompts(" a green 5 on grass | a red 3 ") == ["a green 5 on grass", "a red 3"]
  # What parse reads as a synonym reaches the model as the word it was trained on.
  np.testing.assert_array_equal(
    captions.encode("a red 3 in the center."), captions.encode("a red 3 in the centre")
  )


def test_a_users_wav_becomes_a_centred_clip_at_the_models_rate(tmp_path):
  """A stereo 16 kHz float WAV with 0.4 s of a 440 Hz tone in 2 s of faint noise:
  resampled to 22,050 Hz, its quiet ends trimmed, centred; the tone's pitch kept."""
  rate, rng = 16_000, np.random.default_rng(0)
  t = np.arange(int(0.4 * rate)) / rate
  mono = rng.normal(0, 1e-4, 2 * rate)
  mono[rate : rate + len(t)] += 0.5 * np.sin(2 * np.pi * 440 * t)
  path = str(tmp_path / "seven.wav")
  scipy.io.wavfile.write(path, rate, np.stack([mono, mono], 1).astype(np.float32))
  clip = speech.read_clip(path)
  assert clip.dtype == np.int16 and clip.shape == (speech.CLIP_SAMPLES,)
  sound = np.flatnonzero(np.abs(clip) > 1000)
  assert abs(len(clip) - sound[0] - sound[-1]) < 2 * 256 + 2  # Centred, to a frame.
  assert abs((sound[-1] - sound[0]) / speech.SAMPLE_RATE - 0.4) < 0.03
  spectrum = np.abs(np.fft.rfft(clip.astype(np.float64)))
  assert abs(np.argmax(spectrum) * speech.SAMPLE_RATE / len(clip) - 440) < 3
  config = smoke_config("speech_to_image", "unused")
  config.sample.audio = f"{path}|{path}"
  spec = DataSpec(
    28,
    {
      "image": Field(IMAGE, "image", (28, 28, 1), "uint8"),
      "label": Field(LABEL, "label", (), "int64", 10),
      "audio": Field(TENSOR, "audio", (33075,), "int16"),
    },
  )
  rows = SpeechToImageFamily(config, spec).grid_conditions()
  np.testing.assert_array_equal(rows, np.stack([clip, clip]))
  (tmp_path / "notes.txt").write_text("not a sound")
  with pytest.raises(DataError, match=r"Cannot read .*notes.txt.* as a WAV file"):
    speech.read_clip(str(tmp_path / "notes.txt"))
  long = str(tmp_path / "long.wav")
  scipy.io.wavfile.write(long, rate, (0.5 * np.sin(np.arange(3 * rate))).astype(np.float32))
  with pytest.raises(DataError, match=r"3\.0\d s of sound"):
    speech.read_clip(long)


def test_coordinate_channels_and_foreground_weights():
  """model.coordinates: (x, y) in [-1, 1] as two more input channels;
  diffusion.foreground_weight w: 1 + w on the mask grown by a pixel, mean 1."""
  grid = np.asarray(unet.pixel_coordinates(1, 4, jnp.float32))[0]
  expected = {(0, 0): (-1, -1), (0, 3): (1, -1), (3, 0): (-1, 1), (1, 2): (1 / 3, -1 / 3)}
  for (row, col), xy in expected.items():  # Channel 0 runs along the columns, 1 down the rows.
    np.testing.assert_allclose(grid[row, col], xy, rtol=1e-6)
  config = smoke_config("text_to_image", "unused")
  config.model.coordinates = True
  config.diffusion.foreground_weight = 3.0
  spec = DataSpec(
    32,
    {
      "image": Field(IMAGE, "image", (64, 64, 3), "uint8"),
      "captions": Field(TENSOR, "captions", (4, captions.TOKEN_LENGTH), "int32"),
      "mask": Field("mask", "mask", (64, 64), "uint8"),
    },
  )
  family = TextToImageFamily(config, spec)
  params = jax.eval_shape(family.init_state, jax.random.key(0)).net.params
  first = [v["kernel"].shape for k, v in params["unet"].items() if k.startswith("Conv")]
  assert (3, 3, 5, config.model.channels) in first  # RGB and (x, y).
  mask = np.zeros((2, 32, 32), np.int32)
  mask[0, 10:12, 10:12] = 4
  x0 = jnp.zeros((2, 32, 32, 3))
  w = np.asarray(family.pixel_weights({"mask": jnp.asarray(mask)}, x0))[..., 0]
  np.testing.assert_allclose(w.mean(axis=(1, 2)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(w[1], 1.0)  # No digit: the plain loss.
  assert np.isclose(w[0, 9, 9] / w[0, 0, 0], 4.0) and np.isclose(w[0, 12, 12] / w[0, 0, 0], 4.0)
  assert np.isclose(w[0, 13, 13], w[0, 0, 0]) and np.isclose(w[0, 10, 13], w[0, 0, 0])
  del spec.fields["mask"]
  with pytest.raises(ConfigError, match="foreground_weight=3.0 needs"):
    TextToImageFamily(config, spec)
