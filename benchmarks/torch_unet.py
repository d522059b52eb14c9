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
"""

import math
from typing import Any

from benchmarks import timing


def _import_torch() -> Any:
  return timing.import_torch("DDPM U-Net")


def build_unet(torch, channels, mults, blocks, attention, groups, image_channels, size, dropout):
  nn, F = torch.nn, torch.nn.functional
  emb_dim = 4 * channels

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

  class UNet(nn.Module):
    def __init__(self):
      super().__init__()
      self.emb = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
      self.conv_in = nn.Conv2d(image_channels, channels, 3, padding=1)
      self.down, widths, c, res = nn.ModuleList(), [channels], channels, size
      for level, m in enumerate(mults):
        for _ in range(blocks):
          self.down.append(nn.ModuleList([ResBlock(c, channels * m)]))
          c = channels * m
          if res in attention:
            self.down[-1].append(Attention(c))
          widths.append(c)
        if level != len(mults) - 1:
          self.down.append(nn.ModuleList([nn.Conv2d(c, c, 3, stride=2, padding=1)]))
          widths.append(c)
          res //= 2
      self.mid = nn.ModuleList([ResBlock(c, c), Attention(c), ResBlock(c, c)])
      self.up = nn.ModuleList()
      for level, m in reversed(list(enumerate(mults))):
        for _ in range(blocks + 1):
          self.up.append(nn.ModuleList([ResBlock(c + widths.pop(), channels * m)]))
          c = channels * m
          if res in attention:
            self.up[-1].append(Attention(c))
        if level != 0:
          self.up.append(
            nn.ModuleList([nn.Upsample(scale_factor=2), nn.Conv2d(c, c, 3, padding=1)])
          )
          res *= 2
      self.out = nn.Sequential(
        nn.GroupNorm(groups, c, eps=1e-6), nn.SiLU(), nn.Conv2d(c, image_channels, 3, padding=1)
      )

    def forward(self, x, t):
      half = channels // 2
      freqs = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float32) / (half - 1))
      args = t.float()[:, None] * freqs[None]
      emb = self.emb(torch.cat([torch.sin(args), torch.cos(args)], dim=1))
      h = self.conv_in(x)
      skips = [h]
      for layers in self.down:
        h = layers[0](h, emb) if isinstance(layers[0], ResBlock) else layers[0](h)
        for layer in layers[1:]:
          h = layer(h)
        skips.append(h)
      h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
      for layers in self.up:
        if isinstance(layers[0], ResBlock):
          h = layers[0](torch.cat([h, skips.pop()], dim=1), emb)
          for layer in layers[1:]:
            h = layer(h)
        else:
          h = layers[1](layers[0](h))
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
