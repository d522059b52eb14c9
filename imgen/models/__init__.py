"""Flax networks, one module per architecture, and the compute dtypes they run in."""

import jax.numpy as jnp

from imgen.core.errors import ConfigError

DTYPES = ("float32", "bfloat16", "float16")


def compute_dtype(name: str) -> jnp.dtype:
  """config.model.dtype -> the dtype activations are computed in (parameters,
  optimizer state and losses stay float32)."""
  if name not in DTYPES:
    raise ConfigError(f"model.dtype {name!r}; use one of {DTYPES}.")
  return jnp.dtype(name)
