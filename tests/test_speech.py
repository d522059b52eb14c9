"""Log-mel spectrograms against NumPy, and the spoken digits of eSpeak NG (optional)."""

import sys
import time

import jax
import numpy as np
import pytest

from imgen import data
from imgen.core.errors import DataError
from imgen.data import speech
from imgen.methods import audio

SR = 22_050


def _reference_filterbank(n_fft, n_mels, f_min, f_max):
  """Each triangle evaluated at each rfft bin by np.interp between its mel-spaced corners."""
  mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
  corners = 700.0 * (10.0 ** (np.linspace(mel(f_min), mel(f_max), n_mels + 2) / 2595.0) - 1.0)
  freqs = np.fft.rfftfreq(n_fft, 1.0 / SR)
  return np.stack([np.interp(freqs, corners[m : m + 3], [0, 1, 0]) for m in range(n_mels)], 1)


def _reference_log_mel(x, n_fft, hop, n_mels, f_min, f_max, eps=1e-5, direct=False):
  """float64, one frame at a time: np.fft.rfft or (`direct`) the DFT's sum itself."""
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
  bank = _reference_filterbank(n_fft, n_mels, f_min, f_max)
  n = np.arange(n_fft)
  rows = []
  for start in range(0, len(x) - n_fft + 1, hop):
    frame = x[start : start + n_fft] * window
    if direct:
      spectrum = [
        np.sum(frame * np.exp(-2j * np.pi * k * n / n_fft)) for k in range(n_fft // 2 + 1)
      ]
    else:
      spectrum = np.fft.rfft(frame)
    rows.append(np.log(np.maximum(np.abs(np.asarray(spectrum)) ** 2 @ bank, eps)))
  return np.stack(rows)


def _chirp_and_noise(num_samples, seed):
  t = np.arange(num_samples) / SR
  chirp = 0.5 * np.sin(2 * np.pi * (100 * t + 0.5 * 7000 * t**2 / t[-1]))  # 100 Hz -> 7.1 kHz.
  return chirp + 0.05 * np.random.default_rng(seed).standard_normal(num_samples)


def test_log_mel_matches_numpy_frame_by_frame():
  x = np.stack([_chirp_and_noise(8000, seed) for seed in (0, 1)])
  ours = np.asarray(audio.log_mel(x.astype(np.float32)))
  assert ours.shape == (2, audio.num_frames(8000), 64) == (2, 28, 64)
  for i in range(2):
    reference = _reference_log_mel(x[i], 1024, 256, 64, 0.0, 8000.0)
    np.testing.assert_allclose(ours[i], reference, rtol=0, atol=1e-4)  # 1e-4 relative in mel.


def test_log_mel_matches_a_direct_dft_with_other_settings():
  x = _chirp_and_noise(300, 2)[None]
  kwargs = dict(n_fft=64, hop=20, n_mels=8, f_min=300.0, f_max=None)
  ours = np.asarray(jax.jit(lambda a: audio.log_mel(a, **kwargs))(x.astype(np.float32)))
  reference = _reference_log_mel(x[0], 64, 20, 8, 300.0, SR / 2, direct=True)
  assert ours.shape == (1, 1 + (300 - 64) // 20, 8)
  np.testing.assert_allclose(ours[0], reference, rtol=0, atol=1e-4)
  bank = audio.mel_filterbank(n_fft=64, n_mels=8, f_min=300.0, f_max=None)
  np.testing.assert_allclose(bank, _reference_filterbank(64, 8, 300.0, SR / 2), atol=1e-6)


def test_a_tone_lands_in_its_mel_band():
  band = 30
  mel_max = 2595.0 * np.log10(1.0 + 8000.0 / 700.0)
  centre = 700.0 * (10.0 ** ((band + 1) * mel_max / 65 / 2595.0) - 1.0)  # Band 30's peak, Hz.
  tone = 0.5 * np.sin(2 * np.pi * centre * np.arange(SR) / SR).astype(np.float32)
  spectrogram = np.asarray(audio.log_mel(np.stack([tone, 0.1 * tone])))
  assert spectrogram.shape == (2, audio.num_frames(SR), 64)
  np.testing.assert_array_equal(spectrogram.argmax(-1), band)
  far = np.abs(np.arange(64) - band) > 3
  assert np.all(spectrogram[..., band] - spectrogram[..., far].max(-1) > np.log(1e3))
  near = slice(band - 2, band + 3)  # Power scales with amplitude squared (far bands hit eps).
  np.testing.assert_allclose(
    spectrogram[0, :, near] - spectrogram[1, :, near], np.log(100.0), atol=1e-3
  )


def test_stretching_the_mel_axis_reads_each_band_at_its_scaled_index():
  rng = np.random.default_rng(0)
  mel = rng.normal(size=(3, 5, 64)).astype(np.float32)
  factors = np.array([1.0, 1.13, 0.86], np.float32)
  ours = np.asarray(jax.jit(audio.stretch_mels)(mel, factors))
  np.testing.assert_array_equal(ours[0], mel[0])  # Factor 1: the identity.
  bands = np.arange(64)
  for i, f in enumerate(factors):  # np.interp holds the end value past the last band.
    want = np.stack([np.interp(bands * f, bands, frame) for frame in mel[i]])
    np.testing.assert_allclose(ours[i], want, rtol=1e-5, atol=1e-5)
  peak = np.zeros((1, 1, 64), np.float32)
  peak[..., 33] = 1.0  # Above 1 the spectrum moves down the bands: 33 / 1.1 = 30.
  assert np.asarray(audio.stretch_mels(peak, np.array([1.1], np.float32))).argmax() == 30


def test_num_frames_of_a_clip():
  assert audio.num_frames(speech.CLIP_SAMPLES) == 126
  with pytest.raises(ValueError, match="fewer than one frame"):
    audio.num_frames(1000)


def test_synthesis_repeats_byte_for_byte():
  pytest.importorskip("espeakng_loader")
  first = speech.synthesize("draw a seven", "en+f3", 180, 50)  # f3 breathes: seeded noise.
  time.sleep(1.05)  # espeak_Initialize seeds that noise with the time in seconds.
  with speech.Synthesizer() as synth:
    again = [synth("draw a seven", "en+f3", 180, 50) for _ in range(2)]
    other_voice = synth("draw a seven", "en-us+m7", 180, 50)
    with pytest.raises(DataError, match="no voice 'xx-nonexistent'"):
      synth("seven", "xx-nonexistent", 180, 50)
    after_error = synth("draw a seven", "en+f3", 180, 50)
  assert first.dtype == np.int16 and 0.3 * SR < len(first) < 1.5 * SR
  assert np.abs(first).max() > 5000
  for clip in [*again, after_error]:
    assert clip.tobytes() == first.tobytes()
  assert other_voice.tobytes() != first.tobytes()


def test_tiny_spoken_digits(tmp_path):
  pytest.importorskip("espeakng_loader")
  builder = data.get_builder("spoken_digits/tiny", str(tmp_path))
  voices = {}
  for split, size in (("train", 105), ("test", 27)):
    source = builder.as_data_source(split=split)
    examples = source.__getitems__(list(range(len(source))))
    assert len(examples) == size
    voices[split] = {int(e["voice"]) for e in examples}
    assert {int(e["label"]) for e in examples} == set(range(10))
    for e in examples:
      assert e["audio"].shape == (speech.CLIP_SAMPLES,) and e["audio"].dtype == np.int16
      sound = np.flatnonzero(e["audio"])
      assert abs(sound[0] - (speech.CLIP_SAMPLES - 1 - sound[-1])) <= 1  # Centred.
    # The stored metadata says what was said: synthesising it again gives the same clip.
    e = examples[-1]
    text = speech.phrase_text(int(e["phrase"]), int(e["label"]))
    again = speech.synthesize(text, speech.VOICES[e["voice"]], int(e["rate"]), int(e["pitch"]))
    np.testing.assert_array_equal(speech.fit_clip(again, text), e["audio"])
  assert voices["train"] == set(range(len(speech.TRAIN_VOICES)))
  assert voices["test"] == set(range(len(speech.TRAIN_VOICES), len(speech.VOICES)))
  assert builder.info.features["label"].names == [str(d) for d in range(10)]


def test_without_espeak_the_error_names_the_extra(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # `import` now fails.
  for make in (
    lambda: speech.synthesize("seven", "en", 180, 50),
    lambda: data.get_builder("spoken_digits/tiny", str(tmp_path)),
  ):
    with pytest.raises(DataError) as error:
      make()
    message = str(error.value)
    assert 'pip install -e ".[speech]"' in message and "GPL-3.0" in message
    assert "\n" not in message
