"""PyTorch peers of imgen's texture networks, for benchmarks only.

- The spatial GAN of `imgen/models/sgan.py` with configs/texture.py's layers:
  G doubles its maps by nearest repetition and a 3x3 convolution with
  circular padding (PyTorch's `padding_mode='circular'`: the torus), BatchNorm
  and ReLU between, tanh out; D is 4x4 stride-2 convolutions (BatchNorm after
  all but the first, LeakyReLU 0.2) and a 1x1 convolution to a map of logits.
  The step is imgen's: D on a real and a fake batch (non-saturating BCE over
  every logit), then G through the updated D, Adam for both.
- The random multi-scale feature network of `imgen/methods/texture.py`: the Gram
  loss and its input gradient, the work of one optimiser step.
PyTorch is a benchmark-only extra, imported lazily.
"""

from benchmarks import timing


def _torch():
  return timing.import_torch("texture")


def build_sgan(torch, channels: int, noise: int, g_widths, d_widths):
  nn = torch.nn
  up = lambda cin, cout: [
    nn.Upsample(scale_factor=2),
    nn.Conv2d(cin, cout, 3, padding=1, padding_mode="circular"),
  ]
  layers, cin = [], noise
  for width in g_widths:
    layers += [*up(cin, width), nn.BatchNorm2d(width), nn.ReLU()]
    cin = width
  g = nn.Sequential(*layers, *up(cin, channels), nn.Tanh())
  d_layers, cin = [], channels
  for i, width in enumerate(d_widths):
    d_layers.append(nn.Conv2d(cin, width, 4, 2, 1, bias=False))
    if i:
      d_layers.append(nn.BatchNorm2d(width))
    d_layers.append(nn.LeakyReLU(0.2))
    cin = width
  d_layers.append(nn.Conv2d(cin, 1, 1))
  return g, nn.Sequential(*d_layers)


def sgan_steps_per_second(batch, size, channels, noise, g_widths, d_widths, *, steps) -> float:
  torch = _torch()
  torch.manual_seed(0)
  g, d = build_sgan(torch, channels, noise, g_widths, d_widths)
  g_opt = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
  d_opt = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
  real = torch.rand(batch, channels, size, size) * 2 - 1
  cells = size // 2 ** (len(g_widths) + 1)
  bce = torch.nn.functional.binary_cross_entropy_with_logits

  def step():
    z = torch.randn(batch, noise, cells, cells)
    fake = g(z)
    real_logits, fake_logits = d(real), d(fake.detach())
    d_loss = bce(real_logits, torch.ones_like(real_logits)) + bce(
      fake_logits, torch.zeros_like(fake_logits)
    )
    d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    d_opt.step()
    logits = d(fake)
    g_loss = bce(logits, torch.ones_like(logits))
    g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    g_opt.step()

  return timing.steps_per_second(step, steps)


def generator_images_per_second(side, batch, channels, noise, g_widths, *, repeats) -> float:
  torch = _torch()
  torch.manual_seed(0)
  g, _ = build_sgan(torch, channels, noise, g_widths, (8,))
  g.eval()
  cells = side // 2 ** (len(g_widths) + 1)

  def call():
    with torch.no_grad():
      g(torch.randn(batch, noise, cells, cells))

  return batch * timing.steps_per_second(call, repeats)


def gram_loss_steps_per_second(side, kernels, channels, levels, *, steps) -> float:
  """Loss + input gradient per second of the random-feature Gram loss at `side`
  (periodic, as configs/texture.py optimises), against a random target."""
  torch = _torch()
  torch.manual_seed(0)
  filters = []
  for k in kernels:
    w = torch.randn(channels, 1, k, k)
    w = w - w.mean(dim=(1, 2, 3), keepdim=True)
    filters.append(w / w.pow(2).sum(dim=(1, 2, 3), keepdim=True).sqrt())

  def grams(x):
    out, level = [], x
    for _ in range(levels):
      side_now = level.shape[-1]
      fits = [w for w in filters if side_now >= 2 * w.shape[-1]]
      if not fits:
        break
      rim = (max(w.shape[-1] for w in fits) - 1) // 2
      padded = torch.nn.functional.pad(level, (rim,) * 4, mode="circular")
      parts = []
      for w in fits:
        trim = rim - (w.shape[-1] - 1) // 2
        y = torch.relu(torch.nn.functional.conv2d(padded, w))
        parts.append(y[..., trim : y.shape[-2] - trim, trim : y.shape[-1] - trim])
      f = torch.cat([*parts, level, torch.ones_like(level)], dim=1).flatten(2)
      out.append(f @ f.transpose(1, 2) / f.shape[-1])
      level = torch.nn.functional.avg_pool2d(level, 2)
    return out

  targets = [g.detach() for g in grams(torch.rand(1, 1, side, side) * 2 - 1)]
  x = (torch.rand(1, 1, side, side) * 2 - 1).requires_grad_(True)

  def step():
    loss = sum(((g - t) ** 2).sum() / (t**2).sum() for g, t in zip(grams(x), targets, strict=True))
    (grad,) = torch.autograd.grad(loss, x)
    return grad

  return timing.steps_per_second(step, steps)
