"""PyTorch peer of imgen's CNN classifier train step, for benchmarks only.

The network of `imgen/models/classifiers.py`'s `SimpleCNN` layer for layer:
two stages of (3x3 convolution without bias, 'same' padding, BatchNorm, ReLU)
twice and a 2x2 max-pool, widths `width` and 2 `width`; a dense layer of
4 `width` units with ReLU, dropout, a dense layer to the logits. The step is
configs/cnn.py's: softmax cross-entropy, Adam. PyTorch is a benchmark-only
extra, imported lazily (`pip install torch --index-url https://download.pytorch.org/whl/cpu`).
"""

from benchmarks import timing


def build_cnn(torch, size: int, channels: int, num_classes: int, width: int, dropout: float):
  nn = torch.nn
  layers, cin = [], channels
  for stage in range(2):
    cout = width * 2**stage
    for _ in range(2):
      layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
      cin = cout
    layers.append(nn.MaxPool2d(2))
  flat = cin * (size // 4) ** 2
  layers += [nn.Flatten(), nn.Linear(flat, 4 * width), nn.ReLU(), nn.Dropout(dropout)]
  layers.append(nn.Linear(4 * width, num_classes))
  return nn.Sequential(*layers)


def parameter_count(size: int, channels: int, num_classes: int, width: int) -> int:
  torch = timing.import_torch("CNN")
  return sum(
    p.numel() for p in build_cnn(torch, size, channels, num_classes, width, 0).parameters()
  )


def steps_per_second(
  batch, size, channels, num_classes, width, dropout, *, steps, compile=False
) -> float:
  """Train steps/s of the peer on one fixed batch (one untimed warm-up step)."""
  torch = timing.import_torch("CNN")
  torch.manual_seed(0)
  model = build_cnn(torch, size, channels, num_classes, width, dropout)
  model.train()
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  images = torch.rand(batch, channels, size, size) * 2 - 1
  labels = torch.randint(0, num_classes, (batch,))
  forward = torch.compile(model) if compile else model

  def step():
    loss = torch.nn.functional.cross_entropy(forward(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()

  return timing.steps_per_second(step, steps)
