"""XLA settings imgen makes for the whole process, before JAX starts a backend.

On CPU, XLA 0.10 hands convolutions to YNNPACK by default; its Eigen
convolutions are faster for imgen's models on the x86 CPUs measured (DCGAN
64x64 step 1.01 vs 0.82 steps/s, the same run; BENCHMARKS.md). Flags the user
already put in XLA_FLAGS win, and nothing is added for a jaxlib these flags
were not measured on (XLA aborts on a flag it does not know).
"""

import os

import jaxlib

MEASURED_JAXLIB = "0.10."
CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)


def configure_xla() -> None:
  """Adds `CPU_FLAGS` to XLA_FLAGS; call it before the first JAX computation."""
  if not jaxlib.__version__.startswith(MEASURED_JAXLIB):
    return
  flags = os.environ.get("XLA_FLAGS", "")
  for flag in CPU_FLAGS:
    if flag.split("=")[0] not in flags:
      flags = f"{flags} {flag}".strip()
  os.environ["XLA_FLAGS"] = flags
