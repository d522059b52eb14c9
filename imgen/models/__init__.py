"""Flax networks, one module per architecture, and the compute dtypes they run in."""

import jax.numpy as jnp

from imgen.core.errors import ConfigError

DTYPES = ("float32", "bfloat16")


def compute_dtype(name: str) -> jnp.dtype:
  """config.model.dtype -> the dtype activations are computed in (parameters,
  optimizer state and losses stay float32)."""
  if name == "float16":
    raise ConfigError(
      "model.dtype 'float16' needs loss scaling, which imgen does not do; use bfloat16 "
      "(float32's range, so no scaling)."
    )
  if name not in DTYPES:
    raise ConfigError(f"model.dtype {name!r}; use one of {DTYPES}.")
  return jnp.dtype(name)
