"""Start-up of a run that is one of several processes (one per host or per accelerator).

`initialize(...)` calls `jax.distributed.initialize` when the run is one of
several processes, before JAX starts a backend, and does nothing otherwise:

- explicitly: a coordinator address, a process count and this process's id,
  as main.py's flags or the environment variables `IMGEN_COORDINATOR_ADDRESS`,
  `IMGEN_NUM_PROCESSES`, `IMGEN_PROCESS_ID` (what `python -m imgen.core.launch`
  sets for local processes);
- detected, from the cluster environments JAX's auto-detection reads: a SLURM
  job step of several tasks (`SLURM_NTASKS`), an Open MPI job of several ranks
  (`OMPI_COMM_WORLD_SIZE`), a TPU slice that lists several workers
  (`TPU_WORKER_HOSTNAMES`, `TPU_PROCESS_ADDRESSES`), or JAX's own
  `JAX_COORDINATOR_ADDRESS`; JAX then finds the address, count and id itself;
- forced with `--distributed=on` (e.g. on a Cloud TPU VM pod slice, whose
  workers JAX finds from the metadata server), or refused with `off`.

On CPU the processes reduce over gloo (JAX's CPU collectives). Processes other
than 0 log warnings and errors only; process 0 writes the logs, TensorBoard
and images, and every process takes part in each checkpoint.
"""

import dataclasses
import os

from absl import logging
import jax
from jax import lax
import numpy as np

from imgen.core import parallel
from imgen.core.errors import ConfigError

MODES = ("auto", "on", "off")
ENV = {
  "coordinator_address": "IMGEN_COORDINATOR_ADDRESS",
  "num_processes": "IMGEN_NUM_PROCESSES",
  "process_id": "IMGEN_PROCESS_ID",
}


@dataclasses.dataclass(frozen=True)
class Setup:
  """What `jax.distributed.initialize` is given; None: JAX detects it."""

  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  source: str = "explicit"  # Or the cluster environment it was detected from.


def _count(name: str, environ) -> int:
  try:
    return int(environ.get(name, "1"))
  except ValueError:
    return 1


def _detected_cluster(environ) -> str | None:
  """The cluster environment this process is one of several processes of, if any."""
  if "SLURM_JOB_ID" in environ and "SLURM_STEP_NODELIST" in environ:
    if _count("SLURM_NTASKS", environ) > 1:
      return "SLURM"
  if "OMPI_MCA_orte_hnp_uri" in environ and _count("OMPI_COMM_WORLD_SIZE", environ) > 1:
    return "Open MPI"
  for name in ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES"):
    if len(environ.get(name, "").split(",")) > 1:
      return "Cloud TPU"
  if environ.get("JAX_COORDINATOR_ADDRESS"):
    return "JAX_COORDINATOR_ADDRESS"
  return None


def _int(name: str, value) -> int | None:
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ConfigError(f"{name}={value!r}; it must be an integer.") from None


def resolve(
  mode: str = "auto",
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  environ=None,
) -> Setup | None:
  """The setup of this process from flags (given) and the environment, or None
  for a single-process run. Bad or partial settings are a `ConfigError`."""
  environ = os.environ if environ is None else environ
  if mode not in MODES:
    raise ConfigError(f"--distributed={mode!r}; use one of {MODES}.")
  given = {
    "coordinator_address": coordinator_address or environ.get(ENV["coordinator_address"]) or None,
    "num_processes": _int("num_processes", num_processes or environ.get(ENV["num_processes"])),
    "process_id": _int(
      "process_id", process_id if process_id is not None else environ.get(ENV["process_id"])
    ),
  }
  if mode == "off":
    return None
  explicit = {k: v for k, v in given.items() if v is not None}
  if explicit:
    missing = [f"--{k} (or {ENV[k]})" for k, v in given.items() if v is None]
    if missing:
      raise ConfigError(
        f"Several processes need a coordinator address, a process count and an id; "
        f"{', '.join(sorted(explicit))} given, missing {', '.join(missing)}."
      )
    n, i = given["num_processes"], given["process_id"]
    if n < 1 or not 0 <= i < n:
      raise ConfigError(f"process_id={i} with num_processes={n}; use 0 <= process_id < count.")
    if n == 1 and mode == "auto":
      return None
    return Setup(given["coordinator_address"], n, i)
  cluster = _detected_cluster(environ)
  if cluster is None and mode == "auto":
    return None
  return Setup(source=cluster or "--distributed=on")


def devices_follow_processes() -> bool:
  """Whether this process's devices are replicas p*L ... p*L + L - 1 of pmap's
  axis (process p, L local devices): the layout the input pipeline feeds."""
  local = jax.local_device_count()
  index = jax.pmap(lambda x: lax.axis_index(parallel.AXIS), axis_name=parallel.AXIS)(
    np.zeros(local, np.float32)
  )
  expected = jax.process_index() * local + np.arange(local)
  return bool(np.array_equal(np.asarray(jax.device_get(index)), expected))


def initialize(setup: Setup | None) -> None:
  """Joins the run of several processes that `setup` describes (None: nothing to do).

  Call it before the first JAX computation. Failing to reach the coordinator
  is a `ConfigError` that names it.
  """
  if setup is None:
    return
  try:
    jax.distributed.initialize(
      coordinator_address=setup.coordinator_address,
      num_processes=setup.num_processes,
      process_id=setup.process_id,
    )
  except (RuntimeError, ValueError) as e:
    where = setup.coordinator_address or f"the coordinator {setup.source} names"
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConfigError(f"Could not join the run of several processes at {where}: {reason}") from e
  if jax.process_index() != 0:  # Process 0 speaks for the run.
    logging.set_verbosity(logging.WARNING)
  if not devices_follow_processes():
    logging.warning(
      "The devices' order does not follow the processes here, so rows of each batch meet other "
      "devices than in a run of one process: training is as valid, not bitwise the same."
    )
  logging.info(
    "Process %d of %d (%s); %d local devices of %d.",
    jax.process_index(),
    jax.process_count(),
    setup.source,
    jax.local_device_count(),
    jax.device_count(),
  )
