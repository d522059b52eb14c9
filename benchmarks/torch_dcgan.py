"""PyTorch DCGAN train-step throughput, a benchmark-only peer for imgen.

The models follow the canonical DCGAN of Radford, Metz & Chintala, "Unsupervised
Representation Learning with Deep Convolutional Generative Adversarial
Networks" (ICLR 2016, arXiv:1511.06434), with the exact layer layout of the
PyTorch DCGAN tutorial
(https://pytorch.org/tutorials/beginner/dcgan_faces_tutorial.html), except that
the discriminator emits logits and is trained with ``BCEWithLogitsLoss``.

One train step is the tutorial's: a discriminator update on a real batch
(label 1) plus ``fake.detach()`` (label 0), then a generator update with the
non-saturating loss on ``D(fake)`` (label 1), reusing the same ``fake`` tensor.
Each network has its own Adam(lr=2e-4, betas=(0.5, 0.999)).

PyTorch is a benchmark-only extra (``pip install torch==2.13.0``); this module
imports it lazily so it can be imported without torch installed.

Usage:
  python benchmarks/torch_dcgan.py --batch_size 64 --image_size 64 --steps 10
"""

import argparse
from collections.abc import Callable
import time
from typing import Any

NZ = 100
NGF = 64
NDF = 64
LR = 2e-4
BETAS = (0.5, 0.999)

_INSTALL_HINT = (
  "PyTorch is required for the DCGAN benchmark peer but is not installed. "
  "It is a benchmark-only extra: pip install torch==2.13.0"
)


def _import_torch() -> Any:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(_INSTALL_HINT) from e
  return torch


def geometry(image_size: int) -> tuple[int, int]:
  """(base, levels): image_size = base * 2**levels with 4 <= base <= 7, as imgen's
  `imgen.models.dcgan.geometry` (64 -> (4, 4), the paper's; 28 -> (7, 2))."""
  base, levels = image_size, 0
  while base % 2 == 0 and base > 7:
    base //= 2
    levels += 1
  if levels < 1 or not 4 <= base <= 7:
    raise ValueError(f"image_size {image_size} is not base * 2**k with base in 4..7")
  return base, levels


def _build_models(
  torch: Any, image_size: int, nc: int, g_width: int = NGF, d_width: int = NDF
) -> tuple[Any, Any]:
  """Returns (generator, discriminator) with DCGAN weight init applied."""
  nn = torch.nn
  base, levels = geometry(image_size)  # (4, 4) for 64x64, (4, 3) for 32x32.

  # Generator: nz x 1 x 1 -> (ngf * 2**(levels-1)) x base x base -> ... -> nc x S x S.
  ch = g_width * 2 ** (levels - 1)
  g_layers = [
    nn.ConvTranspose2d(NZ, ch, base, 1, 0, bias=False),
    nn.BatchNorm2d(ch),
    nn.ReLU(True),
  ]
  for _ in range(levels - 1):
    g_layers += [
      nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
      nn.BatchNorm2d(ch // 2),
      nn.ReLU(True),
    ]
    ch //= 2
  g_layers += [nn.ConvTranspose2d(ch, nc, 4, 2, 1, bias=False), nn.Tanh()]
  generator = nn.Sequential(*g_layers)

  # Discriminator: nc x S x S -> ndf x S/2 -> ... -> (ndf * 2**(levels-1)) x 4
  # x base -> 1 x 1 x 1 logit. No BatchNorm on the first layer.
  ch = d_width
  d_layers = [nn.Conv2d(nc, ch, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
  for _ in range(levels - 1):
    d_layers += [
      nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False),
      nn.BatchNorm2d(ch * 2),
      nn.LeakyReLU(0.2, True),
    ]
    ch *= 2
  d_layers += [nn.Conv2d(ch, 1, base, 1, 0, bias=False)]
  discriminator = nn.Sequential(*d_layers)

  def init(m: Any) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
      nn.init.normal_(m.weight, 0.0, 0.02)
      if m.bias is not None:
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
      nn.init.normal_(m.weight, 1.0, 0.02)
      nn.init.zeros_(m.bias)

  generator.apply(init)
  discriminator.apply(init)
  return generator, discriminator


def _make_train_step(
  batch_size: int,
  image_size: int,
  nc: int,
  seed: int = 0,
  g_width: int = NGF,
  d_width: int = NDF,
  compile: bool = False,
) -> tuple[Callable[[], tuple[float, float]], Callable[[], float], Callable[[], float]]:
  """Builds models/optimizers; returns (step, d_step, g_step) closures.

  `step` runs one full train step. `d_step` / `g_step` split the same work
  into its two halves (only used for the optional timing breakdown).
  """
  torch = _import_torch()
  torch.manual_seed(seed)
  net_g, net_d = _build_models(torch, image_size, nc, g_width, d_width)
  net_g.train()
  net_d.train()
  opt_d = torch.optim.Adam(net_d.parameters(), lr=LR, betas=BETAS)
  opt_g = torch.optim.Adam(net_g.parameters(), lr=LR, betas=BETAS)
  if compile:
    net_g, net_d = torch.compile(net_g), torch.compile(net_d)
  criterion = torch.nn.BCEWithLogitsLoss()

  # Fixed random "real" images in [-1, 1]; data loading is not benchmarked.
  real = torch.rand(batch_size, nc, image_size, image_size) * 2.0 - 1.0
  ones = torch.ones(batch_size)
  zeros = torch.zeros(batch_size)
  state: dict[str, Any] = {}

  def d_step() -> float:
    # (1) Update D: maximize log D(x) + log(1 - D(G(z))).
    net_d.zero_grad()
    err_real = criterion(net_d(real).view(-1), ones)
    err_real.backward()
    noise = torch.randn(batch_size, NZ, 1, 1)
    fake = net_g(noise)
    err_fake = criterion(net_d(fake.detach()).view(-1), zeros)
    err_fake.backward()
    opt_d.step()
    state["fake"] = fake
    return (err_real + err_fake).item()

  def g_step() -> float:
    # (2) Update G: maximize log D(G(z)) (non-saturating), same `fake`.
    net_g.zero_grad()
    err_g = criterion(net_d(state.pop("fake")).view(-1), ones)
    err_g.backward()
    opt_g.step()
    return err_g.item()

  def step() -> tuple[float, float]:
    return d_step(), g_step()

  return step, d_step, g_step


def torch_dcgan_steps_per_sec(
  batch_size: int = 64,
  image_size: int = 64,
  nc: int = 3,
  steps: int = 10,
  warmup: int = 3,
  threads: int | None = None,
  g_width: int = NGF,
  d_width: int = NDF,
  compile: bool = False,
) -> float:
  """Measures PyTorch (CPU) DCGAN train steps per second.

  Args:
    batch_size: Images per step (the same batch size for real and fake).
    image_size: base * 2**k with base in 4..7 (the canonical DCGAN is 64).
    nc: Image channels.
    steps: Number of timed train steps.
    warmup: Number of untimed train steps run first.
    threads: If given, passed to `torch.set_num_threads`.
    g_width: ngf, G's width at its last layer before the image.
    d_width: ndf, D's first layer's width.
    compile: Runs G and D under `torch.compile`.

  Returns:
    Train steps per second over the `steps` timed steps.

  Raises:
    ImportError: If torch is not installed (`pip install torch==2.13.0`).
  """
  torch = _import_torch()
  if threads is not None:
    torch.set_num_threads(threads)
  step, _, _ = _make_train_step(
    batch_size, image_size, nc, g_width=g_width, d_width=d_width, compile=compile
  )
  for _ in range(warmup):
    step()
  # `.item()` in each step synchronizes, so wall time covers all the work.
  start = time.perf_counter()
  for _ in range(steps):
    step()
  elapsed = time.perf_counter() - start
  return steps / elapsed


def _breakdown(
  batch_size: int, image_size: int, nc: int, steps: int, warmup: int
) -> tuple[float, float]:
  """Mean seconds per (D step, G step), timed separately."""
  _, d_step, g_step = _make_train_step(batch_size, image_size, nc)
  for _ in range(warmup):
    d_step()
    g_step()
  t_d = t_g = 0.0
  for _ in range(steps):
    t0 = time.perf_counter()
    d_step()
    t1 = time.perf_counter()
    g_step()
    t2 = time.perf_counter()
    t_d += t1 - t0
    t_g += t2 - t1
  return t_d / steps, t_g / steps


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--image_size", type=int, default=64)
  parser.add_argument("--nc", type=int, default=3)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--threads", type=int, default=None)
  parser.add_argument(
    "--breakdown",
    action="store_true",
    help="Also time the D and G halves of the step separately.",
  )
  args = parser.parse_args()

  torch = _import_torch()
  if args.threads is not None:
    torch.set_num_threads(args.threads)
  sps = torch_dcgan_steps_per_sec(
    batch_size=args.batch_size,
    image_size=args.image_size,
    nc=args.nc,
    steps=args.steps,
    warmup=args.warmup,
  )
  print(
    f"torch {torch.__version__}  threads={torch.get_num_threads()}  "
    f"batch={args.batch_size}  image={args.image_size}x{args.image_size}"
  )
  print(f"steps/s: {sps:.4f}  images/s: {sps * args.batch_size:.2f}  (ms/step: {1e3 / sps:.1f})")
  if args.breakdown:
    t_d, t_g = _breakdown(args.batch_size, args.image_size, args.nc, args.steps, args.warmup)
    print(f"D step: {t_d * 1e3:.1f} ms  G step: {t_g * 1e3:.1f} ms")


if __name__ == "__main__":
  main()
