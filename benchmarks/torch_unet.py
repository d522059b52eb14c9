"""PyTorch peer of imgen's DDPM U-Net train step, for benchmarks only.

The network is the one of `imgen/models/unet.py` (Ho et al. 2020, Appendix B)
layer for layer: a 3x3 input convolution; per resolution `num_res_blocks`
residual blocks (GroupNorm, SiLU, 3x3 conv, + dense(time embedding), GroupNorm,
SiLU, dropout, 3x3 conv, 1x1 shortcut when the width changes), self-attention
at the chosen resolutions, a stride-2 3x3 convolution between resolutions; a
middle of block, attention, block; an up path of `num_res_blocks + 1` blocks
per resolution on the concatenated skips, nearest upsampling and a 3x3
convolution; GroupNorm, SiLU, a 3x3 output convolution. The step is imgen's:
a level and noise per image, the simple epsilon loss, Adam, clipping at norm
1, and an EMA of the parameters. PyTorch is a benchmark-only extra, imported
lazily (`pip install torch --index-url https://download.pytorch.org/whl/cpu`).

Text- and speech-conditioned diffusion (`imgen/families/multimodal.py`,
`imgen/models/conditioned.py`): `build_unet` with a `context_dim` adds imgen's
conditioning: the masked mean of the context through a dense layer
("context_embedding") into the time embedding, and after every block (and the
middle's attention) at `cross_attention` resolutions multi-head cross-attention
(GroupNorm, q from the image, k and v from the context, masked softmax, an
output projection, residual). `build_text_encoder` and `build_audio_encoder`
are imgen's `TextEncoder` and `AudioEncoder`, `LogMel` its log-mel spectrogram
(`imgen/methods/audio.py`: the same frames, periodic Hann window, power and HTK
filterbank, the latter taken from `imgen.methods.audio.mel_filterbank` as a constant),
and `build_conditioned` the `ConditionedUNet` with its learned null context.
`conditioned_steps_per_second` is the families' step: besides the above, one
of each row's captions drawn per step (text) or the log-mel of the int16 clip
computed inside the step (speech), and the condition dropped with probability
`diffusion.label_dropout`.

Differences that do not change the arithmetic's size: PyTorch's default
initialisation instead of imgen's variance scaling, and no learning-rate
warm-up. The text encoder's self-attention masks padded keys
(`key_padding_mask`) where flax also masks padded queries: the outputs at
padded positions differ, but nothing downstream reads them (the U-Net masks
them in its cross-attention and its masked mean).
"""

import math
from typing import Any

from benchmarks import timing


def _import_torch() -> Any:
  return timing.import_torch("DDPM U-Net")


def masked_mean(context, mask):
  """(N, L, D), (N, L) bool -> (N, D): the mean over the valid positions."""
  weights = mask.to(context.dtype)[..., None]
  return (context * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def build_unet(
  torch,
  channels,
  mults,
  blocks,
  attention,
  groups,
  image_channels,
  size,
  dropout,
  *,
  cross_attention=(),
  heads=4,
  context_dim=None,
  coordinates=False,
):
  """imgen's U-Net; with `context_dim`, conditioned on a context (N, L, context_dim)
  through the context embedding and cross-attention at `cross_attention` resolutions."""
  nn, F = torch.nn, torch.nn.functional
  emb_dim = 4 * channels
  cross_attention = tuple(cross_attention) if context_dim else ()

  class ResBlock(nn.Module):
    def __init__(self, cin, cout):
      super().__init__()
      self.norm1, self.conv1 = (
        nn.GroupNorm(groups, cin, eps=1e-6),
        nn.Conv2d(cin, cout, 3, padding=1),
      )
      self.dense = nn.Linear(emb_dim, cout)
      self.norm2, self.conv2 = (
        nn.GroupNorm(groups, cout, eps=1e-6),
        nn.Conv2d(cout, cout, 3, padding=1),
      )
      self.dropout = nn.Dropout(dropout)
      self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
      h = self.conv1(F.silu(self.norm1(x)))
      h = h + self.dense(F.silu(emb))[:, :, None, None]
      h = self.conv2(self.dropout(F.silu(self.norm2(h))))
      return self.shortcut(x) + h

  class Attention(nn.Module):
    def __init__(self, c):
      super().__init__()
      self.norm = nn.GroupNorm(groups, c, eps=1e-6)
      self.q, self.k, self.v, self.proj = (nn.Linear(c, c) for _ in range(4))

    def forward(self, x):
      n, c, h, w = x.shape
      y = self.norm(x).reshape(n, c, h * w).transpose(1, 2)
      weights = torch.softmax(self.q(y) @ self.k(y).transpose(1, 2) * c**-0.5, dim=-1)
      return x + self.proj(weights @ self.v(y)).transpose(1, 2).reshape(n, c, h, w)

  class CrossAttention(nn.Module):
    def __init__(self, c):
      super().__init__()
      if c % heads:
        raise ValueError(f"heads={heads} does not divide the width {c}.")
      self.norm = nn.GroupNorm(groups, c, eps=1e-6)
      self.q, self.proj = nn.Linear(c, c), nn.Linear(c, c)
      self.k, self.v = nn.Linear(context_dim, c), nn.Linear(context_dim, c)

    def forward(self, x, context, mask):
      n, c, h, w = x.shape
      d = c // heads
      split = lambda z: z.reshape(n, z.shape[1], heads, d).transpose(1, 2)  # (N, heads, L, d)
      y = self.norm(x).reshape(n, c, h * w).transpose(1, 2)
      q, k, v = split(self.q(y)), split(self.k(context)), split(self.v(context))
      logits = (q @ k.transpose(2, 3)) * d**-0.5
      logits = logits.masked_fill(~mask[:, None, None, :], -1e30)
      y = (torch.softmax(logits, dim=-1) @ v).transpose(1, 2).reshape(n, h * w, c)
      return x + self.proj(y).transpose(1, 2).reshape(n, c, h, w)

  def attend(c, res, self_attend=True):
    """The layers after a block: self-attention, then cross-attention."""
    layers = [Attention(c)] if self_attend else []
    return layers + ([CrossAttention(c)] if res in cross_attention else [])

  class UNet(nn.Module):
    def __init__(self):
      super().__init__()
      self.emb = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
      if context_dim:
        self.context_embedding = nn.Linear(context_dim, emb_dim)
      self.conv_in = nn.Conv2d(image_channels + 2 * coordinates, channels, 3, padding=1)
      self.down, widths, c, res = nn.ModuleList(), [channels], channels, size
      for level, m in enumerate(mults):
        for _ in range(blocks):
          self.down.append(nn.ModuleList([ResBlock(c, channels * m)]))
          c = channels * m
          self.down[-1].extend(attend(c, res, res in attention))
          widths.append(c)
        if level != len(mults) - 1:
          self.down.append(nn.ModuleList([nn.Conv2d(c, c, 3, stride=2, padding=1)]))
          widths.append(c)
          res //= 2
      self.mid = nn.ModuleList([ResBlock(c, c), *attend(c, res), ResBlock(c, c)])
      self.up = nn.ModuleList()
      for level, m in reversed(list(enumerate(mults))):
        for _ in range(blocks + 1):
          self.up.append(nn.ModuleList([ResBlock(c + widths.pop(), channels * m)]))
          c = channels * m
          self.up[-1].extend(attend(c, res, res in attention))
        if level != 0:
          self.up.append(
            nn.ModuleList([nn.Upsample(scale_factor=2), nn.Conv2d(c, c, 3, padding=1)])
          )
          res *= 2
      self.out = nn.Sequential(
        nn.GroupNorm(groups, c, eps=1e-6), nn.SiLU(), nn.Conv2d(c, image_channels, 3, padding=1)
      )

    def forward(self, x, t, context=None, mask=None):
      half = channels // 2
      freqs = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float32) / (half - 1))
      args = t.float()[:, None] * freqs[None]
      emb = self.emb(torch.cat([torch.sin(args), torch.cos(args)], dim=1))
      if context is not None:
        emb = emb + self.context_embedding(masked_mean(context, mask))

      def run(layers, h):
        for layer in layers:
          if isinstance(layer, ResBlock):
            h = layer(h, emb)
          elif isinstance(layer, CrossAttention):
            h = layer(h, context, mask)
          else:
            h = layer(h)
        return h

      if coordinates:  # Each pixel's (x, y) in [-1, 1] as two more channels.
        ramp = torch.linspace(-1.0, 1.0, x.shape[-1])
        grid = torch.stack(torch.meshgrid(ramp, ramp, indexing="xy"))
        x = torch.cat([x, grid[None].expand(x.shape[0], -1, -1, -1)], dim=1)
      h = self.conv_in(x)
      skips = [h]
      for layers in self.down:
        h = run(layers, h)
        skips.append(h)
      h = run(self.mid, h)
      for layers in self.up:
        if isinstance(layers[0], ResBlock):
          h = torch.cat([h, skips.pop()], dim=1)
        h = run(layers, h)
      return self.out(h)

  return UNet()


def steps_per_second(
  batch, size, image_channels, channels, mults, blocks, attention, groups, *, steps, dropout=0.0
):
  """Train steps/s of the peer on one fixed batch (one untimed warm-up step)."""
  torch = _import_torch()
  torch.manual_seed(0)
  model = build_unet(
    torch, channels, mults, blocks, attention, groups, image_channels, size, dropout
  )
  ema = [p.detach().clone() for p in model.parameters()]
  optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
  betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
  abar = torch.cumprod(1 - betas, 0).float()
  x0 = torch.rand(batch, image_channels, size, size) * 2 - 1

  def step():
    t = torch.randint(0, 1000, (batch,))
    noise = torch.randn_like(x0)
    a = abar[t][:, None, None, None]
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    loss = torch.mean((model(xt, t) - noise) ** 2)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    with torch.no_grad():
      torch._foreach_lerp_(ema, list(model.parameters()), 1 - 0.999)
    return loss

  return timing.steps_per_second(step, steps)


# --- text- and speech-conditioned diffusion ---------------------------------------------------


def build_text_encoder(torch, vocab_size, length, width, depth, heads):
  """imgen's TextEncoder: token ids (N, L) -> (context (N, 1 + L, width), valid (N, 1 + L))."""
  nn = torch.nn

  class Block(nn.Module):  # Pre-LayerNorm: self-attention, then a GELU MLP of 4 width.
    def __init__(self):
      super().__init__()
      self.norm1 = nn.LayerNorm(width, eps=1e-6)
      self.attend = nn.MultiheadAttention(width, heads, batch_first=True)
      self.norm2 = nn.LayerNorm(width, eps=1e-6)
      self.mlp = nn.Sequential(
        nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width)
      )

    def forward(self, x, valid):
      y = self.norm1(x)
      x = x + self.attend(y, y, y, key_padding_mask=~valid, need_weights=False)[0]
      return x + self.mlp(self.norm2(x))

  class TextEncoder(nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = nn.Embedding(vocab_size, width)
      self.start = nn.Parameter(0.02 * torch.randn(width))
      self.position = nn.Parameter(0.02 * torch.randn(length + 1, width))
      self.blocks = nn.ModuleList(Block() for _ in range(depth))
      self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward(self, tokens):
      n, num = tokens.shape
      x = torch.cat([self.start.expand(n, 1, width), self.embed(tokens)], dim=1)
      x = x + self.position[: num + 1]
      valid = torch.cat([torch.ones(n, 1, dtype=torch.bool), tokens != 0], dim=1)
      for block in self.blocks:
        x = block(x, valid)
      return self.norm(x), valid

  return TextEncoder()


def build_audio_encoder(torch, n_mels, width):
  """imgen's AudioEncoder: log-mel (N, frames, n_mels) -> (context (N, frames / 8, width),
  valid)."""
  nn, F = torch.nn, torch.nn.functional

  class AudioEncoder(nn.Module):
    def __init__(self):
      super().__init__()
      widths = (n_mels, width // 2, width, width)
      self.convs = nn.ModuleList(
        nn.Conv1d(a, b, 5, stride=2) for a, b in zip(widths[:-1], widths[1:], strict=True)
      )
      self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward(self, mel):
      mean = mel.mean(dim=(1, 2), keepdim=True)
      x = (mel - mean) / (mel.std(dim=(1, 2), correction=0, keepdim=True) + 1e-3)
      x = x.transpose(1, 2)  # (N, mels, frames)
      for conv in self.convs:  # flax's 'SAME' at stride 2: ceil(L / 2) outputs, the extra pad last.
        length = x.shape[-1]
        total = max((-(-length // 2) - 1) * 2 + 5 - length, 0)
        x = F.gelu(conv(F.pad(x, (total // 2, total - total // 2))), approximate="tanh")
      x = self.norm(x.transpose(1, 2))
      return x, torch.ones(x.shape[:2], dtype=torch.bool)

  return AudioEncoder()


class LogMel:
  """imgen.methods.audio.log_mel in PyTorch: (N, T) in [-1, 1] -> (N, frames, n_mels)."""

  def __init__(
    self,
    torch,
    *,
    sample_rate=22_050,
    n_fft=1024,
    hop=256,
    n_mels=64,
    f_min=0.0,
    f_max=8000.0,
    eps=1e-5,
  ):
    from imgen.methods import audio  # pylint: disable=g-import-not-at-top

    self.torch, self.n_fft, self.hop, self.eps = torch, n_fft, hop, eps
    self.window = torch.hann_window(n_fft, periodic=True)
    bank = audio.mel_filterbank(
      sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, f_min=f_min, f_max=f_max
    )
    self.filterbank = torch.from_numpy(bank)  # (n_fft // 2 + 1, n_mels), a fixed constant.

  def __call__(self, waves):
    torch = self.torch
    spectrum = torch.stft(
      waves, self.n_fft, self.hop, window=self.window, center=False, return_complex=True
    )  # (N, bins, frames), no padding: frame t covers samples [t hop, t hop + n_fft).
    power = spectrum.real**2 + spectrum.imag**2
    return torch.log(torch.clamp(power.transpose(1, 2) @ self.filterbank, min=self.eps))


def _is_text(config) -> bool:
  if config.family not in ("text_to_image", "speech_to_image"):
    raise ValueError(f"family {config.family!r} has no conditioned peer.")
  return config.family == "text_to_image"


def build_encoder(torch, config):
  """The peer of `config`'s (text_to_image or speech_to_image) condition encoder."""
  c = config.condition
  if _is_text(config):
    from imgen.data import captions  # pylint: disable=g-import-not-at-top

    return build_text_encoder(
      torch, captions.VOCAB_SIZE, captions.TOKEN_LENGTH, c.width, c.depth, c.heads
    )
  return build_audio_encoder(torch, c.mel.n_mels, c.width)


def layout(model) -> tuple:
  """(channels, mults, blocks, attention, groups) of `build_unet` from a config's `model`
  group: the peer of the U-Net that config builds."""
  return (
    model.channels,
    tuple(model.channel_mults),
    model.num_res_blocks,
    tuple(model.attention_resolutions),
    model.norm_groups,
  )


def build_conditioned(torch, config, image_channels):
  """imgen's ConditionedUNet of a text_to_image or speech_to_image config:
  forward(x_t, t, inputs, keep), rows with keep False on the null context."""
  nn, m, width = torch.nn, config.model, config.condition.width
  unet = build_unet(
    torch,
    *layout(m),
    image_channels,
    m.image_size,
    m.dropout,
    cross_attention=tuple(m.cross_attention_resolutions),
    heads=m.heads,
    context_dim=width,
    coordinates=m.get("coordinates", False),
  )

  class ConditionedUNet(nn.Module):
    def __init__(self):
      super().__init__()
      self.encoder, self.unet = build_encoder(torch, config), unet
      self.null_context = nn.Parameter(torch.randn(width))

    def forward(self, x, t, inputs, keep):
      context, valid = self.encoder(inputs)
      first = torch.where(keep[:, None], context[:, 0], self.null_context)
      context = torch.cat([first[:, None], context[:, 1:]], dim=1)
      valid = valid & (keep[:, None] | (torch.arange(valid.shape[1]) == 0)[None])
      return self.unet(x, t, context, valid)

  return ConditionedUNet()


def conditioned_steps_per_second(config, images, inputs, *, steps) -> float:
  """Train steps/s of the peer of a text_to_image / speech_to_image config on
  one fixed batch (one untimed warm-up step): `images` (N, H, W, C) in
  [-1, 1], `inputs` the batch's `captions` (N, K, L) token ids or `audio`
  (N, T) int16 values."""
  torch = _import_torch()
  torch.manual_seed(0)
  text = _is_text(config)
  model = build_conditioned(torch, config, images.shape[-1])
  o, d = config.optim, config.diffusion
  ema = [p.detach().clone() for p in model.parameters()]
  optimizer = torch.optim.Adam(
    model.parameters(), lr=o.learning_rate, betas=(o.b1, o.b2), eps=o.eps
  )
  if d.schedule != "linear" or d.prediction != "epsilon":
    raise ValueError("The peer has the linear schedule and epsilon prediction only.")
  betas = torch.linspace(1e-4, 0.02, d.num_steps, dtype=torch.float64)
  abar = torch.cumprod(1 - betas, 0).float()
  x0 = torch.tensor(images, dtype=torch.float32).permute(0, 3, 1, 2).contiguous()
  raw = torch.tensor(inputs, dtype=torch.long if text else torch.int32)
  log_mel = None if text else LogMel(torch, **config.condition.mel)
  n, rows = x0.shape[0], torch.arange(x0.shape[0])

  def step():
    t = torch.randint(0, d.num_steps, (n,))
    noise = torch.randn_like(x0)
    keep = torch.rand(n) >= d.label_dropout
    if text:  # One of each row's K captions.
      cond = raw[rows, torch.randint(0, raw.shape[1], (n,))]
    else:
      with torch.no_grad():
        cond = log_mel(raw.float() / 32768.0)
    a = abar[t][:, None, None, None]
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    loss = torch.mean((model(xt, t, cond, keep) - noise) ** 2)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if o.clip_norm:
      torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_norm)
    optimizer.step()
    if o.ema_decay:
      with torch.no_grad():
        torch._foreach_lerp_(ema, list(model.parameters()), 1 - o.ema_decay)
    return loss

  return timing.steps_per_second(step, steps)


def encoder_steps_per_second(config, inputs, *, steps) -> float:
  """Forward + backward calls/s of the condition encoder alone (loss: the mean
  square of its output): `inputs` token ids (N, L) or log-mel spectrograms
  (N, frames, mels)."""
  torch = _import_torch()
  torch.manual_seed(0)
  encoder = build_encoder(torch, config)
  x = torch.tensor(inputs, dtype=torch.long if _is_text(config) else torch.float32)

  def step():
    for p in encoder.parameters():
      p.grad = None
    loss = torch.mean(encoder(x)[0] ** 2)
    loss.backward()
    return loss

  return timing.steps_per_second(step, steps)


def log_mel_per_second(config, clips, *, steps) -> float:
  """Calls/s of the log-mel spectrogram of int16 `clips` (N, T), as the speech step computes it."""
  torch = _import_torch()
  log_mel = LogMel(torch, **config.condition.mel)
  waves = torch.tensor(clips, dtype=torch.int32)

  def step():
    with torch.no_grad():
      return log_mel(waves.float() / 32768.0)

  return timing.steps_per_second(step, steps)
