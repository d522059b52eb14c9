"""Spoken digits synthesised offline with eSpeak NG, as a TFDS builder prepared on first use.

eSpeak NG is GPL-3.0, so it is an optional extra (`pip install -e ".[speech]"`
installs `espeakng-loader`, which ships the library and its voice data);
imgen imports this module without it, and only synthesising (preparing
`spoken_digits`) asks for it.

`spoken_digits`: each digit 0-9 said as a word and in four short phrases
(`PHRASES`: "seven", "the number seven", "digit seven", "draw a seven",
"a seven please"; "an eight"), by English voices of the bundled data
(`VOICES`: an accent, and for some a `+variant` timbre), at `RATES` words
per minute (130, 180, 240) and `PITCHES` (35, 65, of eSpeak's 0-99).
Train and test use disjoint voices: train the 8 `TRAIN_VOICES` (British,
American, Scottish, West Midlands, RP+male3, American+male7, British+female3,
American+female4), test the 2 held-out `TEST_VOICES` (Caribbean, and
Lancaster+female2), whose accents and variants train never hears.
2,400 train and 600 test clips; `spoken_digits/tiny` holds every 23rd clip
of each split (105 train, 27 test), which covers every voice and digit.

A clip is `CLIP_SAMPLES` int16 samples (1.5 s at 22,050 Hz, mono): the
synthesised speech without its leading and trailing silence (eSpeak's
silence is exact zeros), centred and padded with zeros. The longest
utterance, "the number nine" by en-us+f4 at 130 wpm, lasts 1.43 s; a longer
one fails preparation instead of being cut. Each example holds `audio`, `label`
(the digit), and the indices `voice` (into `VOICES`), `phrase` (into
`PHRASES`), and `rate` and `pitch` themselves.

Why a child process per clip: eSpeak NG keeps state from one utterance to the
next, so the same request made twice in one process differs by a few
samples, while a process that has synthesised nothing before makes the same
bytes every time, once the noise generator of breathy variants (f2, f3),
which `espeak_Initialize` seeds with the time in seconds, is given a fixed
seed. `Synthesizer` starts one clean worker (a fresh interpreter running
`speech_worker.py`, never a fork of this process, which may hold JAX and its
threads) that forks one child per clip; the child initialises eSpeak, seeds
it, synthesises, sends the samples back through a pipe and exits. That costs
about 10 ms a clip: the full dataset prepares in about 35 s on two busy cores.
"""

import collections
import contextlib
import dataclasses
import json
import math
import os
import struct
import subprocess
import sys

import numpy as np
import tensorflow_datasets as tfds

from imgen.core.errors import ConfigError
from imgen.core.errors import DataError
from imgen.data import embedded

SAMPLE_RATE = 22_050  # eSpeak NG's only output rate.
CLIP_SECONDS = 1.5
CLIP_SAMPLES = round(CLIP_SECONDS * SAMPLE_RATE)  # 33,075.
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PHRASES = ("{}", "the number {}", "digit {}", "draw a {}", "a {} please")
TRAIN_VOICES = (
  "en",  # British (the default English voice).
  "en-us",
  "en-gb-scotland",
  "en-gb-x-gbcwmd",  # West Midlands.
  "en-gb-x-rp+m3",  # Received Pronunciation, male3 timbre.
  "en-us+m7",
  "en+f3",
  "en-us+f4",
)
TEST_VOICES = ("en-029", "en-gb-x-gbclan+f2")  # Caribbean; Lancaster, female2. Held out.
VOICES = TRAIN_VOICES + TEST_VOICES
RATES = (130, 180, 240)  # Words per minute; eSpeak NG accepts 80-450.
PITCHES = (35, 65)  # eSpeak NG's 0-99, relative to each voice's own pitch.
_HEADER = struct.Struct("<iI")  # speech_worker.py's answer: status, payload length.
_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "speech_worker.py")


def phrase_text(phrase: int, digit: int) -> str:
  """The words of PHRASES[phrase] for `digit`: phrase_text(3, 8) is 'draw an eight'."""
  return PHRASES[phrase].format(WORDS[digit]).replace("a eight", "an eight")


def _espeak_paths() -> tuple[str, str]:
  """(libespeak-ng, espeak-ng-data) of the optional `espeakng-loader` package."""
  try:
    import espeakng_loader  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(
      'Spoken datasets need eSpeak NG, an optional extra: pip install -e ".[speech]" '
      "(eSpeak NG is GPL-3.0, so imgen does not depend on it)."
    ) from e
  return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


class Synthesizer:
  """A clean worker process that makes each clip in a fresh forked child of its own.

  `synth(text, voice, rate, pitch)` returns int16 samples at 22,050 Hz; the
  same request gives the same bytes in every call and every worker. Use as a
  context manager, or `close()` it.
  """

  def __init__(self):
    library, data_path = _espeak_paths()
    self._process = subprocess.Popen(
      [sys.executable, "-I", _WORKER, library, data_path],  # -I: the standard library only.
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
    )

  def __call__(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    return next(self.map([(text, voice, rate, pitch)]))

  def map(self, requests, ahead: int = 2):
    """The clips of (text, voice, rate, pitch) `requests`, in order, with `ahead`
    requests sent before their answers are read: the worker synthesises the
    next clip while the caller stores this one."""
    requests, pending = iter(requests), collections.deque()
    try:
      while True:
        while len(pending) < ahead and (request := next(requests, None)) is not None:
          pending.append(self._send(*request))
        if not pending:
          return
        yield self._receive(pending.popleft())
    finally:  # After an error or an early stop: read the answers in flight, keep in step.
      for sent in pending:
        try:
          self._receive(sent)
        except DataError:
          pass

  def _send(self, text: str, voice: str, rate: int, pitch: int) -> tuple[str, str]:
    if not 80 <= rate <= 450:
      raise ConfigError(f"Speech rate {rate} is outside eSpeak NG's 80-450 words per minute.")
    if not 0 <= pitch <= 99:
      raise ConfigError(f"Speech pitch {pitch} is outside eSpeak NG's 0-99.")
    try:
      self._process.stdin.write((json.dumps([text, voice, int(rate), int(pitch)]) + "\n").encode())
      self._process.stdin.flush()
    except OSError as e:
      raise self._stopped(text, voice) from e
    return text, voice

  def _receive(self, sent: tuple[str, str]) -> np.ndarray:
    try:
      status, length = _HEADER.unpack(self._read(_HEADER.size))
      payload = self._read(length)
    except OSError as e:
      raise self._stopped(*sent) from e
    if status:
      raise DataError(
        f"eSpeak NG cannot synthesise {sent[0]!r} in voice {sent[1]!r}: {payload.decode()}"
      )
    return np.frombuffer(payload, np.int16)

  def _stopped(self, text: str, voice: str) -> DataError:
    return DataError(
      f"The eSpeak NG worker stopped (exit status {self._process.poll()}) while "
      f"synthesising {text!r} in voice {voice!r}; its error is printed above."
    )

  def _read(self, size: int) -> bytes:
    data = self._process.stdout.read(size)
    if len(data) != size:
      raise OSError(f"read {len(data)} of {size} bytes")
    return data

  def close(self) -> None:
    if self._process.stdout.closed:
      return
    with contextlib.suppress(OSError):
      self._process.stdin.close()  # The worker leaves once it has answered every request.
    self._process.stdout.read()
    self._process.stdout.close()
    self._process.wait()

  def __enter__(self) -> "Synthesizer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def synthesize(text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
  """int16 samples (22,050 Hz mono) of `text` said by eSpeak NG's `voice` at
  `rate` words per minute and `pitch` (0-99), from a fresh process."""
  with Synthesizer() as synth:
    return synth(text, voice, rate, pitch)


def fit_clip(samples: np.ndarray, what: str) -> np.ndarray:
  """`samples` without leading and trailing zeros, centred in CLIP_SAMPLES zeros."""
  sound = np.flatnonzero(samples)
  if not sound.size:
    raise DataError(f"eSpeak NG made only silence for {what}.")
  speech = samples[sound[0] : sound[-1] + 1]
  if len(speech) > CLIP_SAMPLES:
    raise DataError(
      f"{what} lasts {len(speech) / SAMPLE_RATE:.2f} s, longer than the {CLIP_SECONDS} s "
      f"clips; raise speech.CLIP_SECONDS or the slowest of speech.RATES."
    )
  return _centred(speech)


def _centred(speech: np.ndarray) -> np.ndarray:
  """int16 `speech` (at most CLIP_SAMPLES long) centred in CLIP_SAMPLES zeros."""
  clip = np.zeros(CLIP_SAMPLES, np.int16)
  start = (CLIP_SAMPLES - len(speech)) // 2
  clip[start : start + len(speech)] = speech
  return clip


def read_clip(path: str) -> np.ndarray:
  """A user's recording as a clip (`--mode=sample` with `sample.audio`): a WAV
  file of any rate and sample format, mixed to mono, resampled to SAMPLE_RATE,
  its quiet ends trimmed (the 256-sample frames below 2% of the loudest
  frame's RMS), centred in CLIP_SAMPLES zeros. A DataError (one line) for a
  file it cannot read, silence, or sound longer than a clip."""
  import scipy.io.wavfile  # pylint: disable=g-import-not-at-top
  import scipy.signal  # pylint: disable=g-import-not-at-top

  try:
    rate, data = scipy.io.wavfile.read(path)
  except (OSError, ValueError, EOFError) as e:
    raise DataError(f"Cannot read {path!r} as a WAV file: {e}") from None
  full_scale = {np.dtype(np.uint8): 128.0, np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2.0**31}
  x = np.asarray(data, np.float64)
  if data.dtype == np.uint8:
    x = x - 128.0
  x = x / full_scale.get(data.dtype, 1.0)
  x = x.mean(axis=1) if x.ndim == 2 else x
  g = math.gcd(int(rate), SAMPLE_RATE)
  x = scipy.signal.resample_poly(x, SAMPLE_RATE // g, int(rate) // g) if rate != SAMPLE_RATE else x
  hop = 256
  frames = x[: len(x) // hop * hop].reshape(-1, hop)
  rms = np.sqrt(np.mean(frames**2, axis=1)) if len(frames) else np.zeros(0)
  if not rms.size or rms.max() == 0:
    raise DataError(f"{path!r} holds no sound.")
  loud = np.flatnonzero(rms >= 0.02 * rms.max())
  speech = x[loud[0] * hop : (loud[-1] + 1) * hop]
  if len(speech) > CLIP_SAMPLES:
    raise DataError(
      f"{path!r} holds {len(speech) / SAMPLE_RATE:.2f} s of sound; the model reads "
      f"{CLIP_SECONDS} s clips: trim it to the spoken digit."
    )
  return _centred(np.clip(np.rint(speech * 32767), -32768, 32767).astype(np.int16))


def split_grid(split: str) -> list[tuple[int, int, int, int, int]]:
  """Every clip of the full `split`, in order: (voice, rate, pitch, phrase, digit)."""
  voices = TRAIN_VOICES if split == "train" else TEST_VOICES
  offset = 0 if split == "train" else len(TRAIN_VOICES)
  return [
    (offset + v, rate, pitch, phrase, digit)
    for v in range(len(voices))
    for rate in RATES
    for pitch in PITCHES
    for phrase in range(len(PHRASES))
    for digit in range(len(WORDS))
  ]


@dataclasses.dataclass
class SpokenDigitsConfig(tfds.core.BuilderConfig):
  """`spoken_digits` or `spoken_digits/tiny`: every `stride`-th clip of the full splits."""

  stride: int = 1


class SpokenDigits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Digits 0-9 spoken by eSpeak NG; train and test voices are disjoint."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
    SpokenDigitsConfig(name="full", description="2,400 train and 600 test clips."),
    SpokenDigitsConfig(
      name="tiny", description="Every 23rd clip: 105 train and 27 test.", stride=23
    ),
  ]
  CLASS_NAMES = tuple(str(d) for d in range(10))

  def __init__(self, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _grid(self, split: str) -> list[tuple[int, tuple]]:
    """(key, clip) pairs of `split`: the key is the clip's index in the full split."""
    return list(enumerate(split_grid(split)))[:: self.builder_config.stride]

  @property
  def SPLIT_SIZES(self) -> dict[str, int]:  # noqa: N802 (the embedded builders' name)
    return {split: len(self._grid(split)) for split in ("train", "test")}

  def _info(self) -> tfds.core.DatasetInfo:
    scalar = lambda: tfds.features.Tensor(shape=(), dtype=np.int32)
    features = {
      # Raw bytes: the default, a list of int64, takes 4x the space and the time.
      "audio": tfds.features.Tensor(shape=(CLIP_SAMPLES,), dtype=np.int16, encoding="bytes"),
      "label": tfds.features.ClassLabel(names=self.CLASS_NAMES),
      "voice": scalar(),
      "rate": scalar(),
      "pitch": scalar(),
      "phrase": scalar(),
    }
    return tfds.core.DatasetInfo(
      builder=self,
      description="1.5 s int16 clips at 22,050 Hz of digits said by eSpeak NG voices.",
      features=tfds.features.FeaturesDict(features),
      supervised_keys=("audio", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    _espeak_paths()  # Fail before any file is written if eSpeak NG is missing.
    return {split: self._generate_examples(split) for split in ("train", "test")}

  def _generate_examples(self, split: str):
    grid = self._grid(split)
    requests = [(phrase_text(ph, d), VOICES[v], r, p) for _, (v, r, p, ph, d) in grid]
    with Synthesizer() as synth:
      for (key, clip), request, samples in zip(grid, requests, synth.map(requests), strict=True):
        voice, rate, pitch, phrase, digit = clip
        what = f"{request[0]!r} in voice {request[1]} at {rate} wpm, pitch {pitch}"
        example = {"audio": fit_clip(samples, what), "label": digit, "voice": voice}
        yield key, {**example, "rate": rate, "pitch": pitch, "phrase": phrase}

  def damage(self) -> str | None:
    """What is wrong with the prepared files (None if every record reads back)."""
    return embedded.damage(self, self.SPLIT_SIZES, {"audio": (CLIP_SAMPLES,)})


BUILDERS = {"spoken_digits": SpokenDigits}
