"""One network's optimizer from its config group: optax transformation,
learning-rate schedule and parameter EMA.

A group (`configs/common.py: optimizer`) names the update rule (`adam`,
`adamw`, `sgd`), the schedule (a linear warmup from 0 over `warmup_steps`,
then `constant`, `cosine` or `linear` decay to `end_scale` times the rate at
`decay_steps`, default `train.num_steps`), global-norm gradient clipping
(`clip_norm`, 0 = off), weight decay (`adamw`: decoupled, scaled by the rate;
`adam`, `sgd`: L2, added to the gradient) and an exponential moving average of
the parameters (`ema_decay`, 0 = off) that starts after `ema_start` updates.
Bad values are a `ConfigError` that names the field, before anything compiles.
"""

import dataclasses
import math

import ml_collections
import optax

from imgen.core.errors import ConfigError

RULES = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear")


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """What updates one network: fixed for a run, so it lives outside the checkpoints."""

  tx: optax.GradientTransformation
  learning_rate: optax.Schedule  # Of the update that follows `count` earlier ones.
  ema_decay: float  # 0: no EMA.
  ema_start: int  # Updates before the EMA starts averaging (it copies the parameters until then).

  @property
  def uses_ema(self) -> bool:
    return self.ema_decay > 0


def _check(path: str, name: str, value, ok: bool, want: str) -> None:
  if not ok:
    raise ConfigError(f"{path}.{name}={value!r}; it must be {want}.")


def _validate(c: ml_collections.ConfigDict, path: str) -> None:
  _check(path, "name", c.name, c.name in RULES, f"one of {RULES}")
  _check(path, "schedule", c.schedule, c.schedule in SCHEDULES, f"one of {SCHEDULES}")
  lr = c.learning_rate
  _check(path, "learning_rate", lr, math.isfinite(lr) and lr > 0, "a positive number")
  for name in ("b1", "b2", "momentum", "ema_decay"):
    _check(path, name, c[name], 0 <= c[name] < 1, "in [0, 1)")
  _check(path, "eps", c.eps, c.eps > 0, "positive")
  for name in ("weight_decay", "clip_norm", "end_scale", "warmup_steps", "ema_start"):
    _check(path, name, c[name], c[name] >= 0, "0 or more")
  if c.decay_steps is not None:
    _check(path, "decay_steps", c.decay_steps, c.decay_steps > c.warmup_steps, "> warmup_steps")


def schedule(c: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """The learning rate as a function of the number of earlier updates."""
  total = c.decay_steps if c.decay_steps is not None else num_steps
  lr, decay_steps = c.learning_rate, max(1, total - c.warmup_steps)
  if c.schedule == "cosine":
    decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=c.end_scale)
  elif c.schedule == "linear":
    decay = optax.linear_schedule(lr, lr * c.end_scale, decay_steps)
  else:
    decay = optax.constant_schedule(lr)
  if not c.warmup_steps:
    return decay
  warmup = optax.linear_schedule(0.0, lr, c.warmup_steps)
  return optax.join_schedules([warmup, decay], [c.warmup_steps])


def make_optimizer(c: ml_collections.ConfigDict, num_steps: int, path: str) -> Optimizer:
  """The optimizer of config group `c` (at `path`, for messages) over a run of `num_steps`."""
  _validate(c, path)
  rate = schedule(c, num_steps)
  parts = [optax.clip_by_global_norm(c.clip_norm)] if c.clip_norm else []
  if c.weight_decay and c.name != "adamw":
    parts.append(optax.add_decayed_weights(c.weight_decay))
  if c.name == "sgd":
    parts.append(optax.sgd(rate, momentum=c.momentum or None, nesterov=c.nesterov))
  elif c.name == "adamw":
    parts.append(optax.adamw(rate, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay))
  else:
    parts.append(optax.adam(rate, b1=c.b1, b2=c.b2, eps=c.eps))
  tx = parts[0] if len(parts) == 1 else optax.chain(*parts)
  return Optimizer(tx, rate, float(c.ema_decay), int(c.ema_start))
