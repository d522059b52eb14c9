"""Log-mel spectrograms in JAX, the input of speech encoders.

`log_mel(audio)` maps a batch of waveforms (N, T) in [-1, 1] to natural-log
mel power spectrograms (N, frames, n_mels):

- frames of `n_fft` samples every `hop`, with no padding and no centring:
  frame t covers samples [t * hop, t * hop + n_fft), and
  `num_frames(T) = 1 + (T - n_fft) // hop` (a 1.5 s clip at 22,050 Hz gives
  126 frames with the defaults); a tail shorter than a hop is dropped;
- each frame times a periodic Hann window, 0.5 - 0.5 cos(2 pi n / n_fft);
- power |rfft|^2 (no normalisation by the window or n_fft);
- `mel_filterbank`: `n_mels` triangles on the HTK mel scale,
  mel(f) = 2595 log10(1 + f / 700): their corners are n_mels + 2 points
  equally spaced in mel from f_min to f_max, each triangle rising linearly
  in Hz from 0 at its left corner to 1 at its centre and back to 0 at its
  right one, not area-normalised (torchaudio's melscale_fbanks with
  mel_scale="htk", norm=None);
- log(max(mel, eps)).

`stretch_mels(mel, factors)` stretches each spectrogram's mel axis by its
factor, a training augmentation for unseen voices in the manner of vocal
tract length perturbation (Jaitly & Hinton 2013, who warp the linear
frequency axis by 0.9-1.1 before the filterbank; this scales the mel bands'
index after it).

The defaults suit a small conv encoder over ~1-1.5 s speech clips at
22,050 Hz: 46 ms frames every 11.6 ms, 64 mels up to 8 kHz, where speech
has nearly all of its energy.
"""

import jax
import jax.numpy as jnp
import numpy as np

from imgen.core.errors import ConfigError


def hz_to_mel(f):
  """The HTK mel scale."""
  return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m):
  return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def mel_filterbank(
  *,
  sample_rate: int = 22_050,
  n_fft: int = 1024,
  n_mels: int = 64,
  f_min: float = 0.0,
  f_max: float | None = 8000.0,
) -> np.ndarray:
  """float32 (n_fft // 2 + 1, n_mels): triangle m's weight at each rfft bin.

  `f_max` None means the Nyquist frequency, sample_rate / 2.
  """
  f_max = sample_rate / 2 if f_max is None else f_max
  if not 0 <= f_min < f_max <= sample_rate / 2:
    raise ConfigError(
      f"Mel range {f_min}-{f_max} Hz must satisfy 0 <= f_min < f_max <= {sample_rate / 2} Hz."
    )
  corners = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
  bins = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
  left, centre, right = corners[:-2, None], corners[1:-1, None], corners[2:, None]
  rising = (bins - left) / (centre - left)
  falling = (right - bins) / (right - centre)
  return np.maximum(0.0, np.minimum(rising, falling)).T.astype(np.float32)


def num_frames(num_samples: int, *, n_fft: int = 1024, hop: int = 256) -> int:
  """How many frames `log_mel` makes of `num_samples` samples (no padding)."""
  if num_samples < n_fft:
    raise ConfigError(
      f"{num_samples} samples are fewer than one frame; use n_fft <= {num_samples}."
    )
  return 1 + (num_samples - n_fft) // hop


def hann_window(n_fft: int) -> np.ndarray:
  """The periodic Hann window: scipy.signal.get_window("hann", n_fft)."""
  return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def log_mel(
  audio: jax.Array,
  *,
  sample_rate: int = 22_050,
  n_fft: int = 1024,
  hop: int = 256,
  n_mels: int = 64,
  f_min: float = 0.0,
  f_max: float | None = 8000.0,
  eps: float = 1e-5,
) -> jax.Array:
  """float32 (N, num_frames(T), n_mels) natural-log mel power of `audio` (N, T) in [-1, 1]."""
  if audio.ndim != 2:
    raise ConfigError(f"log_mel takes audio of shape (N, T), not {audio.shape}.")
  frames = num_frames(audio.shape[1], n_fft=n_fft, hop=hop)
  index = np.arange(frames)[:, None] * hop + np.arange(n_fft)[None, :]
  windowed = jnp.asarray(audio, jnp.float32)[:, index] * hann_window(n_fft)
  spectrum = jnp.fft.rfft(windowed, axis=-1)
  power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
  filterbank = mel_filterbank(
    sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, f_min=f_min, f_max=f_max
  )
  # HIGHEST: no reduced-precision (TF32/bf16) matmul on accelerators.
  mel = jnp.matmul(power, filterbank, precision=jax.lax.Precision.HIGHEST)
  return jnp.log(jnp.maximum(mel, eps))


def stretch_mels(mel: jax.Array, factors: jax.Array) -> jax.Array:
  """`mel` (N, frames, n_mels) with band b of row i read at band b * factors[i]:
  linear interpolation between the two nearest bands, the top band beyond
  the last. Factor 1 is the identity; above 1 the spectrum moves down the bands."""
  bands = mel.shape[-1]
  at = jnp.clip(jnp.arange(bands, dtype=jnp.float32)[None] * factors[:, None], 0.0, bands - 1)
  low = jnp.floor(at).astype(jnp.int32)
  high = jnp.minimum(low + 1, bands - 1)
  weight = (at - low)[:, None, :]
  pick = lambda index: jnp.take_along_axis(mel, jnp.broadcast_to(index[:, None], mel.shape), -1)
  return pick(low) * (1.0 - weight) + pick(high) * weight
