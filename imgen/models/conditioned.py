"""Conditioning encoders trained from scratch with the diffusion U-Net.

- `TextEncoder`: token ids (N, L) (0 = padding) -> (N, 1 + L, D): a learned
  start vector followed by the tokens, each a learned embedding plus a learned
  position embedding, through `depth` pre-LayerNorm transformer blocks
  (multi-head self-attention over the valid positions, a GELU MLP of 4 D),
  then a final LayerNorm. The start position is always valid, so an empty
  caption still has one.
- `AudioEncoder`: log-mel spectrograms (N, frames, mels) -> (N, frames / 8, D):
  each clip standardised over all its values (loudness differs between voices),
  then three 1-D convolutions over time (kernel 5, stride 2, GELU; widths D/2,
  D, D) and a LayerNorm; every position valid.
- `ConditionedUNet`: an encoder and the U-Net of `imgen.models.unet`, whose
  cross-attention reads the encoder's sequence. `cond = {"inputs": ...,
  "keep": (N,) bool}`: rows with keep False are unconditional: their context
  is one learned "null" vector and nothing else is attended to, so their
  output does not depend on their inputs (classifier-free guidance, Ho &
  Salimans 2022, with the caption or clip dropped).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from imgen.models.unet import UNet


class TransformerBlock(nn.Module):
  """Pre-LayerNorm self-attention and MLP, computed in `dtype` (LayerNorm
  statistics and the attention softmax in float32; parameters float32)."""

  width: int
  heads: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    y = nn.LayerNorm(dtype=self.dtype)(x)
    attend = nn.MultiHeadDotProductAttention(
      self.heads, qkv_features=self.width, dtype=self.dtype, force_fp32_for_softmax=True
    )
    x = x + attend(y, y, mask=nn.make_attention_mask(mask, mask))
    y = nn.Dense(4 * self.width, dtype=self.dtype)(nn.LayerNorm(dtype=self.dtype)(x))
    return x + nn.Dense(self.width, dtype=self.dtype)(nn.gelu(y))


class TextEncoder(nn.Module):
  """Token ids (N, L) -> (context (N, 1 + L, width), valid (N, 1 + L))."""

  vocab_size: int
  length: int
  width: int = 64
  depth: int = 2
  heads: int = 4
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    n, length = tokens.shape
    if length > self.length:
      raise ValueError(f"{length} tokens; the text encoder takes at most {self.length}.")
    init = nn.initializers.normal(0.02)
    x = nn.Embed(self.vocab_size, self.width, embedding_init=init, dtype=self.dtype)(tokens)
    start = self.param("start", init, (self.width,)).astype(self.dtype)
    x = jnp.concatenate([jnp.broadcast_to(start, (n, 1, self.width)), x], axis=1)
    position = self.param("position", init, (self.length + 1, self.width))[: length + 1]
    x = x + position.astype(self.dtype)
    valid = jnp.concatenate([jnp.ones((n, 1), bool), tokens != 0], axis=1)
    for _ in range(self.depth):
      x = TransformerBlock(self.width, self.heads, self.dtype)(x, valid)
    return nn.LayerNorm(dtype=self.dtype)(x), valid


class AudioEncoder(nn.Module):
  """Log-mel spectrograms (N, frames, mels) -> (context (N, frames', width), valid)."""

  width: int = 64
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, mel: jax.Array) -> tuple[jax.Array, jax.Array]:
    mean = jnp.mean(mel, axis=(1, 2), keepdims=True)  # In the mel's float32.
    x = (mel - mean) / (jnp.std(mel, axis=(1, 2), keepdims=True) + 1e-3)
    for features in (self.width // 2, self.width, self.width):
      conv = nn.Conv(features, (5,), strides=(2,), padding="SAME", dtype=self.dtype)
      x = nn.gelu(conv(x))
    x = nn.LayerNorm(dtype=self.dtype)(x)
    return x, jnp.ones(x.shape[:2], bool)


ENCODERS = {"text": TextEncoder, "audio": AudioEncoder}


class ConditionedUNet(nn.Module):
  """(x_t, t, {"inputs", "keep"}) -> the U-Net's output, conditioned through
  cross-attention on `encoder(inputs)` where keep, unconditional elsewhere."""

  encoder: nn.Module
  unet: UNet

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, cond: dict[str, Any], train: bool = False):
    context, valid = self.encoder(cond["inputs"])
    null = self.param("null_context", nn.initializers.normal(1.0), (context.shape[-1],))
    keep = cond["keep"].astype(bool)
    first = jnp.where(keep[:, None], context[:, 0], null.astype(context.dtype))
    context = jnp.concatenate([first[:, None], context[:, 1:]], axis=1)
    valid = valid & (keep[:, None] | (jnp.arange(valid.shape[1]) == 0)[None])
    return self.unet(x, t, None, train, context=context, context_mask=valid)
