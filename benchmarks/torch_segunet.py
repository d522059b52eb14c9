"""PyTorch peer of imgen's segmentation U-Net train step, for benchmarks only.

The network of `imgen/models/seg_unet.py` layer for layer (Ronneberger et al.
2015 with 'same' padding): per level two (3x3 convolution without bias,
BatchNorm, ReLU) and a 2x2 max-pool; a bottom level; per level up a 2x2
stride-2 transposed convolution, the skip concatenated first, two
convolutions; a 1x1 convolution to the class logits. Channels per level are
`width` times `mults` (default doubling). The step is imgen's: per-pixel
cross-entropy, Adam; with `deep_supervision` w > 0, 1x1 heads on the lower
expanding levels and w times the mean of their cross-entropies against each
cell's class shares (the average-pooled one-hot masks). PyTorch is a benchmark-only extra,
imported lazily (`pip install torch --index-url https://download.pytorch.org/whl/cpu`).
"""

from typing import Any

from benchmarks import timing


def _import_torch() -> Any:
  return timing.import_torch("segmentation U-Net")


def build_unet(
  torch, in_channels: int, num_classes: int, depth: int, width: int, mults=(), aux=False
):
  """The U-Net; with `aux`, forward returns (logits, [aux logits of levels 1..depth-1])."""
  nn = torch.nn

  def block(cin, cout):
    layers = []
    for c in (cin, cout):
      layers += [nn.Conv2d(c, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*layers)

  class UNet(nn.Module):
    def __init__(self):
      super().__init__()
      widths = [width * (mults[lv] if mults else 2**lv) for lv in range(depth + 1)]
      self.down = nn.ModuleList(
        block(in_channels if level == 0 else widths[level - 1], widths[level])
        for level in range(depth)
      )
      self.bottom = block(widths[depth - 1], widths[depth])
      self.up = nn.ModuleList(
        nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2) for level in range(depth)
      )
      self.up_blocks = nn.ModuleList(
        block(2 * widths[level], widths[level]) for level in range(depth)
      )
      self.out = nn.Conv2d(width, num_classes, 1)
      self.heads = nn.ModuleList(
        nn.Conv2d(widths[level], num_classes, 1) for level in range(1, depth) if aux
      )

    def forward(self, x):
      skips = []
      for down in self.down:
        x = down(x)
        skips.append(x)
        x = torch.nn.functional.max_pool2d(x, 2)
      x = self.bottom(x)
      heads = []
      for level in reversed(range(depth)):
        x = torch.cat([skips[level], self.up[level](x)], dim=1)
        x = self.up_blocks[level](x)
        if aux and level > 0:
          heads.append(self.heads[level - 1](x))
      return (self.out(x), heads) if aux else self.out(x)

  return UNet()


def parameter_count(
  in_channels: int, num_classes: int, depth: int, width: int, mults=(), aux=False
) -> int:
  torch = _import_torch()
  model = build_unet(torch, in_channels, num_classes, depth, width, mults, aux)
  return sum(p.numel() for p in model.parameters())


def steps_per_second(
  batch,
  size,
  in_channels,
  num_classes,
  depth,
  width,
  *,
  steps,
  compile=False,
  mults=(),
  deep_supervision=0.0,
):
  """Train steps/s of the peer on one fixed batch (one untimed warm-up step)."""
  torch = _import_torch()
  torch.manual_seed(0)
  aux = deep_supervision > 0
  model = build_unet(torch, in_channels, num_classes, depth, width, mults, aux)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  images = torch.rand(batch, in_channels, size, size) * 2 - 1
  masks = torch.randint(0, num_classes, (batch, size, size))
  forward = torch.compile(model) if compile else model

  F = torch.nn.functional
  onehot = F.one_hot(masks, num_classes).permute(0, 3, 1, 2).float()
  shares = [F.avg_pool2d(onehot, 2**level) for level in range(1, depth) if aux][::-1]

  def step():
    out = forward(images)
    if aux:
      out, heads = out
      deep = [F.cross_entropy(h, s) for h, s in zip(heads, shares, strict=True)]  # Soft targets.
    loss = F.cross_entropy(out, masks)
    if aux:
      loss = loss + deep_supervision * sum(deep) / len(deep)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss

  return timing.steps_per_second(step, steps)
