"""XLA settings imgen makes for the whole process, before JAX starts a backend.

On CPU, XLA 0.10 hands convolutions to YNNPACK by default; its Eigen
convolutions are faster for imgen's models on the x86 CPUs measured (DCGAN
64x64 step 1.01 vs 0.82 steps/s, the same run; BENCHMARKS.md). Flags the user
already put in XLA_FLAGS win, and nothing is added for a jaxlib these flags
were not measured on (XLA aborts on a flag it does not know).

Huge pages (`use_huge_pages`, where a config sets `train.huge_pages`: the
diffusion configs): XLA's CPU runtime allocates each call's temporary buffers
afresh (the diffusion U-Net's train step: one 500 MB block), and glibc hands
blocks this large back to the kernel when they are freed, so every step faults
in and zeroes 122,000 new 4 KiB pages. glibc's `glibc.malloc.hugetlb=1` has
malloc ask for transparent huge pages (2 MiB, 512x fewer faults): the
diffusion step went from 2.52 to 3.24 steps/s, while the VAE's (28x28, 66 ->
53 steps/s) and the segmentation U-Net's (10.5 -> 8.7) small steps got slower
(2026-12-06, BENCHMARKS.md), hence a per-config choice. glibc reads its
tunables only when a process starts, so `main.py` re-executes itself once
with it set, where it can act: Linux, glibc >= 2.35, transparent huge pages
in 'madvise' mode (in 'always' mode they are used already).
`IMGEN_HUGE_PAGES=0` turns it off.
"""

import os
import sys

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


HUGE_PAGES = "glibc.malloc.hugetlb=1"
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_at_least(major: int, minor: int) -> bool:
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
  except (AttributeError, OSError, ValueError):
    return False
  return name == "glibc" and tuple(map(int, version.split(".")[:2])) >= (major, minor)


def huge_pages_would_help() -> bool:
  """True where malloc's huge-page tunable is known to the C library and the
  kernel gives huge pages only to those who ask (THP in 'madvise' mode)."""
  if not sys.platform.startswith("linux") or not _glibc_at_least(2, 35):
    return False
  try:
    with open(_THP_MODE) as f:
      return "[madvise]" in f.read()
  except OSError:
    return False


def use_huge_pages() -> None:
  """Re-executes this process (same interpreter and arguments) with
  `HUGE_PAGES` in GLIBC_TUNABLES, once, where that helps; otherwise returns.
  Call it first thing, before any work (nothing of the process survives)."""
  tunables = os.environ.get("GLIBC_TUNABLES", "")
  if os.environ.get("IMGEN_HUGE_PAGES", "1") == "0" or "glibc.malloc.hugetlb" in tunables:
    return
  if not huge_pages_would_help():
    return
  os.environ["GLIBC_TUNABLES"] = ":".join(filter(None, (tunables, HUGE_PAGES)))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
