"""PyTorch peer of imgen's convolutional VAE train step, for benchmarks only.

The network of `imgen/models/conv_vae.py` layer for layer: the encoder halves
the resolution with 4x4 stride-2 convolutions (padding 1, bias, ReLU) of
widths `width`, 2 `width`, ... down to a `base` x `base` map (the DCGAN
geometry), then a dense layer of 16 `width` units with ReLU and one to the
posterior's mean and log-variance; the decoder has dense layers of 16 `width`
units and of the `base` x `base` map (ReLU each), 4x4 stride-2 transposed
convolutions without bias (ReLU between), and a per-channel output bias. The
step is configs/vae.py's: dynamic binarisation, one reparameterised sample,
Bernoulli log-likelihood of the logits, closed-form KL, Adam. PyTorch is a
benchmark-only extra, imported lazily.
"""

from benchmarks import timing
from benchmarks.torch_dcgan import geometry


def build_vae(torch, size: int, channels: int, latent_dim: int, width: int):
  nn = torch.nn
  base, levels = geometry(size)

  class VAE(nn.Module):
    def __init__(self):
      super().__init__()
      layers, cin = [], channels
      for i in range(levels):
        layers += [nn.Conv2d(cin, width * 2**i, 4, 2, 1), nn.ReLU()]
        cin = width * 2**i
      flat = cin * base * base
      layers += [nn.Flatten(), nn.Linear(flat, 16 * width), nn.ReLU()]
      layers.append(nn.Linear(16 * width, 2 * latent_dim))
      self.encoder = nn.Sequential(*layers)
      self.map = (cin, base)
      self.dense = nn.Sequential(
        nn.Linear(latent_dim, 16 * width), nn.ReLU(), nn.Linear(16 * width, flat), nn.ReLU()
      )
      ups = []
      for _ in range(levels - 1):
        ups += [nn.ConvTranspose2d(cin, cin // 2, 4, 2, 1, bias=False), nn.ReLU()]
        cin //= 2
      ups.append(nn.ConvTranspose2d(cin, channels, 4, 2, 1, bias=False))
      self.ups = nn.Sequential(*ups)
      self.out_bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x, eps):
      mean, log_var = self.encoder(x).chunk(2, dim=1)
      z = mean + torch.exp(0.5 * log_var) * eps
      c, b = self.map
      logits = self.ups(self.dense(z).view(-1, c, b, b)) + self.out_bias
      return logits, mean, log_var

  return VAE()


def parameter_count(size: int, channels: int, latent_dim: int, width: int) -> int:
  torch = timing.import_torch("VAE")
  return sum(p.numel() for p in build_vae(torch, size, channels, latent_dim, width).parameters())


def steps_per_second(batch, size, channels, latent_dim, width, *, steps, compile=False) -> float:
  """Train steps/s of the peer on one fixed batch of grey levels (one untimed
  warm-up step); each step draws its binarisation and its latent noise."""
  torch = timing.import_torch("VAE")
  torch.manual_seed(0)
  model = build_vae(torch, size, channels, latent_dim, width)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  images = torch.rand(batch, channels, size, size)  # Pixels in [0, 1].
  forward = torch.compile(model) if compile else model
  bce = torch.nn.functional.binary_cross_entropy_with_logits

  def step():
    target = (torch.rand_like(images) < images).float()
    eps = torch.randn(batch, latent_dim)
    logits, mean, log_var = forward(2 * target - 1, eps)
    nll = bce(logits, target, reduction="none").sum(dim=(1, 2, 3))
    kl = 0.5 * (mean**2 + log_var.exp() - 1 - log_var).sum(dim=1)
    loss = (nll + kl).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()

  return timing.steps_per_second(step, steps)
