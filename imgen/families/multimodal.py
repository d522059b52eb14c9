"""Diffusion conditioned on text or speech: the U-Net of the diffusion family
with cross-attention to a sequence from an encoder trained with it.

- `text_to_image`: captions of `scene_captions` (`imgen.data.captions`),
  tokenised, through `TextEncoder`. Each train row reads one of its example's
  `captions` (drawn per step), dropped with probability
  `diffusion.label_dropout` for classifier-free guidance.
- `speech_to_image`: the int16 clip `audio` of `spoken_mnist` (a spoken digit
  paired with an MNIST image of it), as a log-mel spectrogram computed in JAX
  (`imgen.methods.audio`) inside the step, through `AudioEncoder`. In
  training each row's mel axis is stretched by a factor drawn uniformly in
  1 +- `condition.mel_stretch` (`audio.stretch_mels`), for voices it never hears.

Everything else (training, the bound, DDIM/DDPM sampling, guidance,
inpainting) is `imgen.families.diffusion`'s. Sampling takes `condition` rows of
the raw inputs (token ids, or int16 clips); the grids show `condition_rows`:
the prompts of `sample.prompt` (text) or held-out speakers' clips of each
digit (speech), one prompt per row of 8. `--mode=prompts` scores samples
drawn from the held-out split's conditions (`imgen.modes.prompts`).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from imgen.core import parallel
from imgen.core.errors import ConfigError
from imgen.data import captions
from imgen.data import speech
from imgen.data.spec import DataSpec
from imgen.families.diffusion import DiffusionFamily
from imgen.methods import audio
from imgen.models import compute_dtype
from imgen.models import conditioned

GRID_COLUMNS = 8


def parse_prompts(spec: str) -> list[str]:
  """'|'-separated prompts -> a list; each must encode (ConfigError otherwise)."""
  prompts = [p.strip() for p in spec.split("|") if p.strip()]
  if not prompts:
    raise ConfigError("sample.prompt is empty; give one or more prompts separated by '|'.")
  for p in prompts:
    try:
      captions.parse(p)
      captions.encode(p)
    except ValueError as e:
      raise ConfigError(
        f"sample.prompt {p!r}: {e} Write it as the captions do, e.g. 'a large green 5 in the "
        "centre on grass' (imgen/data/captions.py)."
      ) from e
  return prompts


def check_conditioning(config: ml_collections.ConfigDict, spec: DataSpec) -> None:
  """A ConfigError for cross-attention that would read nothing or cannot split into heads."""
  m, c = config.model, config.condition
  sizes = [spec.size // 2**level for level in range(len(m.channel_mults))]
  if not m.cross_attention_resolutions or set(m.cross_attention_resolutions) - set(sizes):
    raise ConfigError(
      f"model.cross_attention_resolutions={tuple(m.cross_attention_resolutions)}; the U-Net's "
      f"resolutions are {sizes}: name one or more of them."
    )
  widths = {m.channels * k for k in m.channel_mults}
  if any(w % m.heads for w in widths):
    raise ConfigError(f"model.heads={m.heads} does not divide the U-Net widths {sorted(widths)}.")
  if "heads" in c and c.width % c.heads:
    raise ConfigError(f"condition.heads={c.heads} does not divide condition.width={c.width}.")


class _SequenceConditioned(DiffusionFamily):
  """The diffusion family with `{"inputs", "keep"}` conditions (see `conditioned`)."""

  input_field: str  # The batch field the condition is read from.

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    if config.model.conditional:
      raise ConfigError(
        f"model.conditional is for class labels; the {config.family} family is conditioned "
        "on its own inputs: leave it False."
      )
    if self.input_field not in spec.fields:
      raise ConfigError(
        f"The {config.family} family reads the feature {self.input_field!r}, which "
        f"{config.data.name} lacks; use data.name={self.default_data!r}."
      )
    self.spec = spec
    super().__init__(config, spec)

  default_data: str

  @property
  def conditional(self) -> bool:
    return True

  def make_model(self, config: ml_collections.ConfigDict, **overrides):
    m = config.model
    check_conditioning(config, self.spec)
    unet = super().make_model(
      config,
      num_classes=None,
      cross_attention_resolutions=tuple(m.cross_attention_resolutions),
      heads=m.heads,
    )
    encoder = self.make_encoder(config.condition, compute_dtype(m.dtype))
    return conditioned.ConditionedUNet(encoder, unet)

  def make_encoder(self, c: ml_collections.ConfigDict, dtype: jnp.dtype):
    raise NotImplementedError

  def encoder_inputs(self, raw: jax.Array) -> jax.Array:
    """The encoder's input from a batch field's rows."""
    return raw

  def example_condition(self):
    shape = (1, *self.spec.model_shape(self.input_field))
    return self.wrap(jnp.zeros(shape, jnp.int32), jnp.ones((1,), bool))

  def wrap(self, raw: jax.Array, keep: jax.Array) -> dict:
    return {"inputs": self.encoder_inputs(raw), "keep": keep}

  def train_condition(self, batch: dict, key: jax.Array, n: int):
    u = parallel.global_draw(jax.random.uniform, key, n, ())
    raw = self.train_inputs(batch, jax.random.fold_in(key, 1), n)
    return self.wrap(raw, u >= self.label_dropout)

  def train_inputs(self, batch: dict, key: jax.Array, n: int) -> jax.Array:
    del key, n
    return batch[self.input_field]

  def given_condition(self, batch: dict):
    raw = jnp.asarray(batch[self.input_field])
    return self.wrap(self.first_input(raw), jnp.ones(raw.shape[:1], bool))

  def first_input(self, raw: jax.Array) -> jax.Array:
    return raw

  def null_condition(self, cond):
    return {"inputs": cond["inputs"], "keep": jnp.zeros_like(cond["keep"])}

  def sample_condition(self, condition, key, n):
    del key
    if condition is None:  # Unconditional samples.
      shape = (n, *self.spec.model_shape(self.input_field))
      return self.wrap(jnp.zeros(shape, jnp.int32), jnp.zeros((n,), bool))
    return self.wrap(jnp.asarray(condition), jnp.ones((n,), bool))

  def grid_conditions(self) -> np.ndarray:
    """One condition per grid row (a prompt, a clip)."""
    raise NotImplementedError

  def condition_rows(self, num: int) -> np.ndarray:
    """The condition of each of `num` samples: the grid's conditions in turn, each for 8."""
    rows = self.grid_conditions()
    return rows[(np.arange(num) // GRID_COLUMNS) % len(rows)]

  def grid_size(self) -> int:
    return GRID_COLUMNS * len(self.grid_conditions())


class TextToImageFamily(_SequenceConditioned):
  input_field = "captions"
  condition_kind = "text"
  default_data = "layout_scenes"

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    self.prompts = parse_prompts(config.sample.prompt)
    super().__init__(config, spec)

  def make_encoder(self, c, dtype):
    return conditioned.TextEncoder(
      captions.VOCAB_SIZE, captions.TOKEN_LENGTH, c.width, c.depth, c.heads, dtype
    )

  def example_condition(self):
    tokens = jnp.zeros((1, captions.TOKEN_LENGTH), jnp.int32)
    return self.wrap(tokens, jnp.ones((1,), bool))

  def train_inputs(self, batch, key, n):
    options = batch["captions"]  # (n, K, L): K phrasings of each scene.
    draw = lambda k, shape: jax.random.randint(k, shape, 0, options.shape[1])
    pick = parallel.global_draw(draw, key, n, ())
    return jnp.take_along_axis(options, pick[:, None, None], axis=1)[:, 0]

  def first_input(self, raw):
    return raw[:, 0]

  def sample_condition(self, condition, key, n):
    if condition is None:
      tokens = jnp.zeros((n, captions.TOKEN_LENGTH), jnp.int32)
      return self.wrap(tokens, jnp.zeros((n,), bool))
    return self.wrap(jnp.asarray(condition, jnp.int32), jnp.ones((n,), bool))

  def grid_conditions(self) -> np.ndarray:
    return np.stack([captions.encode(p) for p in self.prompts])


class SpeechToImageFamily(_SequenceConditioned):
  input_field = "audio"
  condition_kind = "speech"
  default_data = "spoken_mnist"

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    self.mel = dict(config.condition.mel)
    self.mel_stretch = config.condition.get("mel_stretch", 0.0)  # Runs from before it: none.
    self._grid_clips = None
    audio_files = config.sample.get("audio", "")
    self.audio_files = [p.strip() for p in audio_files.split("|")] if audio_files.strip() else []
    self._clip_source = (config.data.name, config.data.data_dir, config.data.eval_split)
    super().__init__(config, spec)

  def make_encoder(self, c, dtype):
    return conditioned.AudioEncoder(c.width, dtype)

  def encoder_inputs(self, raw):
    return audio.log_mel(raw.astype(jnp.float32) / 32768.0, **self.mel)

  def train_condition(self, batch, key, n):
    cond = super().train_condition(batch, key, n)
    if self.mel_stretch:
      u = parallel.global_draw(jax.random.uniform, jax.random.fold_in(key, 2), n, ())
      factors = 1.0 + self.mel_stretch * (2.0 * u - 1.0)
      cond = {**cond, "inputs": audio.stretch_mels(cond["inputs"], factors)}
    return cond

  def grid_conditions(self) -> np.ndarray:
    """One row per WAV file of `sample.audio`, or else one per digit of
    data.eval_split, in order: its first clip there (a held-out voice)."""
    if self._grid_clips is None and self.audio_files:
      self._grid_clips = np.stack([speech.read_clip(p) for p in self.audio_files]).astype(np.int32)
    if self._grid_clips is None:
      from imgen import data  # pylint: disable=g-import-not-at-top

      name, data_dir, split = self._clip_source
      source = data.get_builder(name, data_dir).as_data_source(split=split)
      first = {}
      for i in range(len(source)):
        example = source[i]
        first.setdefault(int(example["label"]), np.asarray(example["audio"], np.int32))
        if len(first) == 10:
          break
      self._grid_clips = np.stack([first[d] for d in sorted(first)])  # Tiny splits: fewer.
    return self._grid_clips
