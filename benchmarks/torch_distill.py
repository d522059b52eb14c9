"""PyTorch peer of the distill family's consistency-distillation step
(`imgen/families/distill.py`, `imgen/methods/consistency.py`), for benchmarks only.

The same arithmetic as imgen's step on the flow-matching teacher of configs/diffusion.py:
three copies of `torch_unet.build_unet` (the student, trained; its EMA, the target; the
teacher, frozen). Per image a pair of adjacent levels of the rho schedule, x = x_0 + s n,
the teacher's Heun steps to the next level (two teacher evaluations each, no gradient), the
target's consistency function there (no gradient), the student's at x with its backward
pass, the pseudo-Huber distance, Adam, and the EMA updates of the target (mu) and of the
sampling weights (optim.ema_decay). The denoiser is the
flow objective's (the network reads x / (1 + s) at time 1000 s / (1 + s) and predicts the
velocity); the consistency function wraps it with Song et al.'s boundary scalings.

Differences that do not change the arithmetic's size: PyTorch's default initialisation,
the three networks start from different draws (imgen's start from one set of weights).
"""

import copy

import numpy as np

from benchmarks import timing
from benchmarks import torch_unet
from imgen.methods import samplers


def consistency_steps_per_second(
  batch,
  size,
  image_channels,
  channels,
  mults,
  blocks,
  attention,
  groups,
  *,
  steps,
  levels=18,
  substeps=1,
  sigma_min=0.002,
  sigma_max=20.0,
  rho=7.0,
  sigma_data=0.5,
  mu=0.95,
  ema_decay=0.995,
) -> float:
  """Consistency-distillation steps/s of the peer on one fixed batch."""
  torch = timing.import_torch("consistency distillation")
  torch.manual_seed(0)
  student = torch_unet.build_unet(
    torch, channels, mults, blocks, attention, groups, image_channels, size, 0.0
  )
  target = copy.deepcopy(student).requires_grad_(False)
  teacher = copy.deepcopy(student).requires_grad_(False)
  optimizer = torch.optim.Adam(student.parameters(), lr=2e-4)
  ema = [p.detach().clone() for p in student.parameters()]
  # The levels are constants, taken from imgen's schedule (as torch_unet's mel filterbank).
  fine = samplers.karras_sigmas((levels - 1) * substeps + 1, sigma_min, sigma_max, rho)[:-1]
  sigmas = torch.tensor(fine, dtype=torch.float32)
  x0 = torch.rand(batch, image_channels, size, size) * 2 - 1
  c = 0.00054 * float(np.sqrt(image_channels * size * size))
  rows = lambda s: s[:, None, None, None]

  def denoise(model, x, s):
    t = s / (1 + s)
    xt = x / (1 + rows(s))
    return xt - rows(t) * model(xt, 1000 * t)

  def consistency(model, x, s):
    s4 = rows(s)
    c_skip = sigma_data**2 / ((s4 - sigma_min) ** 2 + sigma_data**2)
    c_out = sigma_data * (s4 - sigma_min) / torch.sqrt(sigma_data**2 + s4**2)
    edm_skip = sigma_data**2 / (s4**2 + sigma_data**2)
    edm_out = s4 * sigma_data / torch.sqrt(s4**2 + sigma_data**2)
    return c_skip * x + c_out * (denoise(model, x, s) - edm_skip * x) / edm_out

  def step():
    i = torch.randint(0, levels - 1, (batch,)) * substeps
    s = sigmas[i]
    x = x0 + rows(s) * torch.randn_like(x0)
    with torch.no_grad():
      x_next = x
      for j in range(substeps):  # The teacher's Heun steps across the interval.
        a, b = sigmas[i + j], sigmas[i + j + 1]
        slope = (x_next - denoise(teacher, x_next, a)) / rows(a)
        euler = x_next + rows(b - a) * slope
        slope_b = (euler - denoise(teacher, euler, b)) / rows(b)
        x_next = x_next + rows(b - a) * 0.5 * (slope + slope_b)
      goal = consistency(target, x_next, b)
    diff = (consistency(student, x, s) - goal).flatten(1)
    loss = torch.mean(torch.sqrt(torch.sum(diff**2, dim=1) + c**2) - c)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
      torch._foreach_lerp_(list(target.parameters()), list(student.parameters()), 1 - mu)
      torch._foreach_lerp_(ema, list(student.parameters()), 1 - ema_decay)
    return loss

  return timing.steps_per_second(step, steps)
