"""The PyTorch peer of imgen's SNGAN / WGAN-GP train step, for benchmarks.

The same networks as `imgen/models/resnet_gan.py` (SNGAN's CIFAR-10 ResNet,
Miyato et al. 2018, Table 4; initialisation aside), written here in plain
PyTorch, and the same step as `imgen/families/gan.py`: `n_dis` critic updates,
each on its own real batch and fresh noise, then one generator update through
the last critic update's fake batch. Variants: spectral norm on every D layer
(`torch.nn.utils.spectral_norm`, one power iteration per forward) with the
hinge loss; the WGAN-GP critic (no spectral norm, mean pooling) with the
gradient penalty; and DiffAugment (colour, translation, cutout) on every image
D sees.
"""

import time

import torch
from torch import nn
import torch.nn.functional as F


def _sn(layer: nn.Module, on: bool) -> nn.Module:
  return nn.utils.spectral_norm(layer) if on else layer


class GBlock(nn.Module):
  def __init__(self, cin: int, cout: int):
    super().__init__()
    self.b1, self.b2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
    self.c1, self.c2 = nn.Conv2d(cin, cout, 3, 1, 1), nn.Conv2d(cout, cout, 3, 1, 1)
    self.sc = nn.Conv2d(cin, cout, 1)

  def forward(self, x):
    h = F.interpolate(F.relu(self.b1(x)), scale_factor=2, mode="nearest")
    h = self.c2(F.relu(self.b2(self.c1(h))))
    return h + self.sc(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
  def __init__(self, cin: int, cout: int, down: bool, first: bool, sn: bool):
    super().__init__()
    hidden = cout if first else cin
    self.first, self.down = first, down
    self.c1 = _sn(nn.Conv2d(cin, hidden, 3, 1, 1), sn)
    self.c2 = _sn(nn.Conv2d(hidden, cout, 3, 1, 1), sn)
    self.sc = _sn(nn.Conv2d(cin, cout, 1), sn) if (first or down or cin != cout) else None

  def forward(self, x):
    h = x if self.first else F.relu(x)
    h = self.c2(F.relu(self.c1(h)))
    if self.down:
      h = F.avg_pool2d(h, 2)
    if self.first:
      return h + self.sc(F.avg_pool2d(x, 2))
    s = x
    if self.sc is not None:
      s = self.sc(x)
      if self.down:
        s = F.avg_pool2d(s, 2)
    return h + s


class Generator(nn.Module):
  def __init__(self, z: int = 128, widths=(256, 256, 256, 256), base: int = 4, channels: int = 3):
    super().__init__()
    self.base, self.w0 = base, widths[0]
    self.l1 = nn.Linear(z, base * base * widths[0])
    self.blocks = nn.Sequential(
      *[GBlock(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)]
    )
    self.bn, self.out = nn.BatchNorm2d(widths[-1]), nn.Conv2d(widths[-1], channels, 3, 1, 1)

  def forward(self, z):
    x = self.l1(z).view(-1, self.w0, self.base, self.base)
    return torch.tanh(self.out(F.relu(self.bn(self.blocks(x)))))


class Discriminator(nn.Module):
  def __init__(self, widths=(128, 128, 128, 128), down=(1, 1, 0, 0), sn=True, pool="sum"):
    super().__init__()
    blocks, cin = [], 3
    for i, (w, d) in enumerate(zip(widths, down, strict=True)):
      blocks.append(DBlock(cin, w, bool(d), i == 0, sn))
      cin = w
    self.blocks, self.pool = nn.Sequential(*blocks), pool
    self.fc = _sn(nn.Linear(cin, 1, bias=pool == "mean"), sn)

  def forward(self, x):
    h = F.relu(self.blocks(x))
    h = h.sum((2, 3)) if self.pool == "sum" else h.mean((2, 3))
    return self.fc(h).view(-1)


def diff_augment(x: torch.Tensor) -> torch.Tensor:
  """DiffAugment's colour, translation (1/8) and cutout (1/2), per image."""
  n, _, h, w = x.shape
  u = lambda: torch.rand(n, 1, 1, 1, dtype=x.dtype)
  x = x + (u() - 0.5)
  mean = x.mean(1, keepdim=True)
  x = (x - mean) * (u() * 2) + mean
  mean = x.mean((1, 2, 3), keepdim=True)
  x = (x - mean) * (u() + 0.5) + mean
  s = int(h * 0.125 + 0.5)
  dy, dx = torch.randint(-s, s + 1, (n,)), torch.randint(-s, s + 1, (n,))
  rows = (torch.arange(h)[None, :] - dy[:, None]).clamp(-1, h)  # Output row i reads i - dy.
  cols = (torch.arange(w)[None, :] - dx[:, None]).clamp(-1, w)
  padded = F.pad(x, (1, 1, 1, 1))
  index = torch.arange(n)[:, None, None]
  x = padded.permute(0, 2, 3, 1)[index, rows[:, :, None] + 1, cols[:, None, :] + 1].permute(
    0, 3, 1, 2
  )
  c = int(h * 0.5 + 0.5)
  cy, cx = torch.randint(0, h + (1 - c % 2), (n,)), torch.randint(0, w + (1 - c % 2), (n,))
  r = torch.arange(h)[None, :] - (cy[:, None] - c // 2)
  q = torch.arange(w)[None, :] - (cx[:, None] - c // 2)
  inside = ((r >= 0) & (r < c))[:, :, None] & ((q >= 0) & (q < c))[:, None, :]
  return x * (~inside)[:, None].to(x.dtype)


def make_step(variant: str, batch_size: int, n_dis: int, widths_g, widths_d):
  """A closure running one full train step (n_dis D updates, one G update)."""
  sn, gp, augment = variant != "wgan_gp", variant == "wgan_gp", variant == "sngan_diffaugment"
  g = Generator(widths=widths_g)
  d = Discriminator(widths=widths_d, sn=sn, pool="mean" if gp else "sum")
  g_opt = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.0, 0.9))
  d_opt = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.0, 0.9))
  reals = [torch.rand(batch_size, 3, 32, 32) * 2 - 1 for _ in range(n_dis)]
  aug = diff_augment if augment else (lambda x: x)

  def step():
    for j in range(n_dis):
      z = torch.randn(batch_size, 128)
      last = j == n_dis - 1
      with torch.set_grad_enabled(last):
        fake = g(z)
      d_opt.zero_grad(set_to_none=True)
      real_in, fake_in = aug(reals[j]), aug(fake.detach())
      real_logits, fake_logits = d(real_in), d(fake_in)
      if gp:
        loss = fake_logits.mean() - real_logits.mean()
        eps = torch.rand(batch_size, 1, 1, 1)
        mixed = (eps * real_in + (1 - eps) * fake_in).requires_grad_(True)
        (grads,) = torch.autograd.grad(d(mixed).sum(), mixed, create_graph=True)
        loss = loss + 10.0 * ((grads.flatten(1).norm(dim=1) - 1) ** 2).mean()
      else:
        loss = F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
      loss.backward()
      d_opt.step()
    g_opt.zero_grad(set_to_none=True)
    (-d(aug(fake)).mean()).backward()
    g_opt.step()

  return step


def steps_per_sec(step, steps: int, warmup: int = 1) -> float:
  for _ in range(warmup):
    step()
  t = time.perf_counter()
  for _ in range(steps):
    step()
  return steps / (time.perf_counter() - t)
