"""PyTorch peer of the judge's train step (imgen/models/reader.py, imgen/families/judge.py),
for benchmarks only.

The network layer for layout: the scene resized (bilinear, half-pixel centres,
no antialiasing) to 6 * 2**levels pixels; per level two (3x3 convolution
without bias, BatchNorm, ReLU) and a 2x2 max-pool; two more at the lowest
resolution; per cell of the 3x3 grid the 4x4 window of the map (padded by one
with zeros) with a one-hot of the cell through a shared Linear-ReLU-Dropout and
a Linear to the cell's logits (present, class, colour, size); the background
from the map's spatial mean. The step is the judge's: per image the
background's cross-entropy, per cell the binary cross-entropy of "present"
and, where a digit is, the cross-entropies of its class, colour and size;
Adam. PyTorch is a benchmark-only extra, imported lazily.
"""

from typing import Any

from benchmarks import timing

GRID = 3


def _import_torch() -> Any:
  return timing.import_torch("judge's layout reader")


def build_reader(torch, *, backgrounds, colours, sizes, digits=10, width, levels, hidden, dropout):
  nn = torch.nn
  F = torch.nn.functional

  def conv_bn_relu(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

  class Reader(nn.Module):
    def __init__(self):
      super().__init__()
      layers, cin = [], 3
      for level in range(levels):
        c = width * 2**level
        layers += conv_bn_relu(cin, c) + conv_bn_relu(c, c) + [nn.MaxPool2d(2)]
        cin = c
      top = width * 2**levels
      layers += conv_bn_relu(cin, top) + conv_bn_relu(top, top)
      self.features = nn.Sequential(*layers)
      self.hidden = nn.Linear(16 * top + GRID * GRID, hidden)
      self.dropout = nn.Dropout(dropout)
      self.cells = nn.Linear(hidden, 1 + digits + colours + sizes)
      self.background = nn.Linear(top, backgrounds)
      self.splits = (1, digits, colours, sizes)

    def forward(self, x):
      side = 2 * GRID * 2**levels
      x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
      x = self.features(x)
      n, c = x.shape[:2]
      pooled = x.mean(dim=(2, 3))
      windows = F.unfold(F.pad(x, (1, 1, 1, 1)), kernel_size=4, stride=2)  # (n, c*16, 9)
      windows = windows.transpose(1, 2)
      which = torch.eye(GRID * GRID).expand(n, -1, -1)
      h = self.dropout(F.relu(self.hidden(torch.cat([windows, which], -1))))
      present, digit, colour, size = torch.split(self.cells(h), self.splits, dim=-1)
      return self.background(pooled), present[..., 0], digit, colour, size

  return Reader()


def parameter_count(**kw) -> int:
  return sum(p.numel() for p in build_reader(_import_torch(), **kw).parameters())


def steps_per_second(batch: int, size: int, *, steps: int, **kw) -> float:
  """Train steps/s of the peer on one fixed batch of random layouts (one untimed warm-up)."""
  torch = _import_torch()
  F = torch.nn.functional
  torch.manual_seed(0)
  model = build_reader(torch, **kw)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  images = torch.rand(batch, 3, size, size) * 2 - 1
  cells = GRID * GRID
  present = (torch.rand(batch, cells) < 0.17).float()
  labels = [torch.randint(0, kw[k], (batch, cells)) for k in ("digits", "colours", "sizes")]
  background = torch.randint(0, kw["backgrounds"], (batch,))

  def step():
    back, present_logits, *heads = model(images)
    per_cell = F.binary_cross_entropy_with_logits(present_logits, present, reduction="none")
    for head, label in zip(heads, labels, strict=True):
      ce = F.cross_entropy(head.reshape(-1, head.shape[-1]), label.reshape(-1), reduction="none")
      per_cell = per_cell + present * ce.reshape(batch, cells)
    loss = (F.cross_entropy(back, background, reduction="none") + per_cell.sum(-1)).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss

  return timing.steps_per_second(step, steps)
