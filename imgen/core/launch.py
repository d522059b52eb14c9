"""Starts N local processes that form one imgen run, for trying multi-process training by hand.

python -m imgen.core.launch --processes=2 --cpu_devices=2 -- \
  --config=configs/gan.py --workdir=runs/x

Each process runs `main.py` with the arguments after `--` and joins the run
through `IMGEN_COORDINATOR_ADDRESS` (127.0.0.1 and a free port),
`IMGEN_NUM_PROCESSES` and `IMGEN_PROCESS_ID`; `--cpu_devices=K` gives each
process K CPU devices (JAX_NUM_CPU_DEVICES, CPU only), as on a machine without
accelerators. Their output is prefixed with the process index. Without a
`--workdir` the processes share a new one under runs/.

Ctrl-C or SIGTERM to the launcher is passed on as SIGTERM to every process:
they stop together after the same step, with one checkpoint (JAX's preemption
sync); a second Ctrl-C kills them. If one process fails, the others are
stopped and the launcher exits with the first failure's code. Run the same
command again to resume.
"""

import argparse
import ctypes
import datetime
import os
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAIN = os.path.join(ROOT, "main.py")
GRACE_S = 20  # How long the others get to stop after one process fails, before SIGKILL.


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def default_workdir(config_file: str) -> str:
  """runs/<config name>-<date-time>: a new run's folder when no --workdir is
  given (main.py's, and the launcher's for all of its processes)."""
  name = os.path.splitext(os.path.basename(config_file.split(":")[0]))[0]
  return os.path.join("runs", f"{name}-{datetime.datetime.now():%Y%m%d-%H%M%S}")


def process_env(index: int, count: int, port: int, cpu_devices: int | None, base=None) -> dict:
  """The environment of process `index` of `count` local processes."""
  env = dict(os.environ if base is None else base)
  env.update(
    IMGEN_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
    IMGEN_NUM_PROCESSES=str(count),
    IMGEN_PROCESS_ID=str(index),
    PYTHONUNBUFFERED="1",
  )
  if cpu_devices:
    env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(cpu_devices))
  return env


def _die_with_parent() -> None:
  """In the child, before main.py: Linux kills it if the launcher dies (even by SIGKILL)."""
  if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _relay(stream, prefix: str, out) -> None:
  for line in stream:
    out.write(prefix + line)
    out.flush()


class Launch:
  """N child processes of main.py and the threads that relay their output."""

  def __init__(self, count: int, main_args: list[str], cpu_devices: int | None):
    port = free_port()
    self.children, self._threads, self.stopping = [], [], 0
    for i in range(count):  # All started before any thread: preexec_fn and threads do not mix.
      child = subprocess.Popen(
        [sys.executable, MAIN, *main_args],
        env=process_env(i, count, port, cpu_devices),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # The terminal's Ctrl-C reaches the launcher only.
        preexec_fn=_die_with_parent,
      )
      print(f"launch: process {i} of {count} is pid {child.pid}", file=sys.stderr, flush=True)
      self.children.append(child)
    for i, child in enumerate(self.children):
      for stream, out in ((child.stdout, sys.stdout), (child.stderr, sys.stderr)):
        thread = threading.Thread(target=_relay, args=(stream, f"[{i}] ", out), daemon=True)
        thread.start()
        self._threads.append(thread)

  def signal_all(self, signum: int) -> None:
    for child in self.children:
      if child.poll() is None:
        child.send_signal(signum)

  def on_signal(self, signum, frame) -> None:
    del frame
    self.stopping += 1
    if self.stopping == 1:
      print(f"launch: {signal.Signals(signum).name}; stopping every process", file=sys.stderr)
      self.signal_all(signal.SIGTERM)
    else:
      self.signal_all(signal.SIGKILL)

  def wait(self) -> int:
    """Waits for every process; returns 0 or the first failure's exit code
    (128 + N for a process killed by signal N, as a shell says)."""
    failed_at, code, reported = None, 0, set()
    while True:
      for i, child in enumerate(self.children):
        rc = child.poll()
        if rc is None or i in reported:
          continue
        reported.add(i)
        if rc != 0:
          how = f"was killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with {rc}"
          print(f"launch: process {i} (pid {child.pid}) {how}", file=sys.stderr, flush=True)
        if rc != 0 and failed_at is None:
          failed_at, code = time.monotonic(), rc if rc > 0 else 128 - rc
          self.signal_all(signal.SIGTERM)  # The others would wait for it at the next collective.
      if len(reported) == len(self.children):
        break
      if failed_at is not None and time.monotonic() - failed_at > GRACE_S:
        self.signal_all(signal.SIGKILL)
      time.sleep(0.2)
    for thread in self._threads:
      thread.join(timeout=5)
    return code


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m imgen.core.launch",
    description="Start N local processes of one imgen run (arguments after -- go to main.py).",
  )
  parser.add_argument("--processes", type=int, default=2, help="How many processes.")
  parser.add_argument(
    "--cpu_devices", type=int, default=None, help="CPU devices per process (CPU runs)."
  )
  parser.add_argument("main_args", nargs=argparse.REMAINDER, help="-- then main.py's flags")
  args = parser.parse_args(argv)
  main_args = args.main_args[1:] if args.main_args[:1] == ["--"] else args.main_args
  if args.processes < 1:
    parser.error(f"--processes={args.processes}; it must be at least 1.")
  if not any(a.startswith("--config") for a in main_args):
    parser.error("give main.py's flags after --, e.g. -- --config=configs/gan.py")
  if not any(a.startswith("--workdir") for a in main_args):
    config = next((a.split("=", 1)[1] for a in main_args if a.startswith("--config=")), "run")
    main_args.append(f"--workdir={default_workdir(config)}")
  launch = Launch(args.processes, main_args, args.cpu_devices)
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, launch.on_signal)
  return launch.wait()


if __name__ == "__main__":
  sys.exit(main())
