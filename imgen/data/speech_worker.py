"""The process that synthesises speech for `imgen.data.speech`: one forked child per clip.

Run as `python speech_worker.py LIBRARY DATA_PATH` (by file path, so that no
package `__init__` and nothing but the standard library is imported). It reads
one JSON request a line from stdin, `[text, voice, rate, pitch]`, and answers
each on stdout with a header `<iI` (status: 0 or an error; payload length) and
the payload: the clip's int16 samples (native byte order) or the error's text.

The worker itself never initialises eSpeak NG: every clip is made by a fresh
`os.fork()` of it, which initialises the library, synthesises, writes the
samples through a pipe and leaves with `os._exit`. eSpeak NG keeps state
between utterances that shifts later ones by a few samples; a child that has
made nothing before, its noise generators given fixed seeds, makes the same
bytes every time.
"""

import ctypes
import json
import os
import struct
import sys

AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: call the callback, return when done.
ESPEAK_RATE, ESPEAK_PITCH = 1, 3  # espeak_PARAMETER.
POS_CHARACTER = 1  # espeak_POSITION_TYPE.
ESPEAK_CHARS_UTF8 = 1  # espeak_Synth flag.
HEADER = struct.Struct("<iI")
RAND_SEED = 1  # Fixed forever: changing it changes every clip of a breathy voice.

_CALLBACK = ctypes.CFUNCTYPE(
  ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


def _write_all(fd: int, data: bytes) -> None:
  view = memoryview(data)
  while view:
    view = view[os.write(fd, view) :]


def _read_all(fd: int) -> bytes:
  chunks = []
  while chunk := os.read(fd, 1 << 16):
    chunks.append(chunk)
  return b"".join(chunks)


def _synthesize(lib: ctypes.CDLL, data_path: str, text: str, voice: str, rate: int, pitch: int):
  """int16 bytes of `text`; only ever called once per process (in a fresh child)."""
  sample_rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
  if sample_rate != 22050:
    raise RuntimeError(f"espeak_Initialize returned {sample_rate} for data {data_path}")
  # Breath noise (the variants f2, f3, f5...) comes from a generator that
  # espeak_Initialize seeds with the time in seconds; fixed seeds make it repeat.
  lib.espeak_ng_SetRandSeed(RAND_SEED)
  ctypes.CDLL(None).srand(ctypes.c_uint(RAND_SEED))  # libc's rand(), which this build imports.
  chunks = []

  def collect(wav, num_samples, events):
    del events
    if wav and num_samples > 0:
      chunks.append(ctypes.string_at(wav, 2 * num_samples))
    return 0  # Continue.

  callback = _CALLBACK(collect)
  lib.espeak_SetSynthCallback(callback)
  if lib.espeak_SetVoiceByName(voice.encode()) != 0:
    raise RuntimeError(f"eSpeak NG has no voice {voice!r}")
  for parameter, value in ((ESPEAK_RATE, rate), (ESPEAK_PITCH, pitch)):
    if lib.espeak_SetParameter(parameter, value, 0) != 0:
      raise RuntimeError(f"espeak_SetParameter({parameter}, {value}) failed")
  encoded = text.encode()
  status = lib.espeak_Synth(
    encoded, len(encoded) + 1, 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None
  )
  if status != 0 or lib.espeak_Synchronize() != 0:
    raise RuntimeError(f"espeak_Synth failed ({status}) for {text!r}")
  lib.espeak_Terminate()
  return b"".join(chunks)


def _clip_in_child(lib: ctypes.CDLL, data_path: str, request: list) -> tuple[int, bytes]:
  """(status, payload) of one request, made by a forked child of this process."""
  read_fd, write_fd = os.pipe()
  pid = os.fork()
  if pid == 0:  # The child: synthesise, send, leave without any cleanup.
    os.close(read_fd)
    try:
      payload, status = _synthesize(lib, data_path, *request), 0
    except BaseException as e:  # Any failure goes back as text.
      payload, status = f"{type(e).__name__}: {e}".encode(), 1
    try:
      _write_all(write_fd, HEADER.pack(status, len(payload)) + payload)
    finally:
      os._exit(status)
  os.close(write_fd)
  with os.fdopen(read_fd, "rb", buffering=0) as pipe:
    message = _read_all(pipe.fileno())
  _, code = os.waitpid(pid, 0)
  if len(message) < HEADER.size:
    return 1, f"the synthesis child died (wait status {code}) for {request!r}".encode()
  status, length = HEADER.unpack_from(message)
  return status, message[HEADER.size : HEADER.size + length]


def load_library(library: str) -> ctypes.CDLL:
  """libespeak-ng, loaded (which runs nothing: the children initialise it)."""
  lib = ctypes.CDLL(library)
  lib.espeak_Synth.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_uint,
    ctypes.c_int,
    ctypes.c_uint,
    ctypes.c_uint,
    ctypes.c_void_p,
    ctypes.c_void_p,
  ]
  lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
  return lib


def main(library: str, data_path: str) -> None:
  lib = load_library(library)
  out = sys.stdout.buffer
  for line in sys.stdin:
    status, payload = _clip_in_child(lib, data_path, json.loads(line))
    out.write(HEADER.pack(status, len(payload)) + payload)
    out.flush()


if __name__ == "__main__":
  main(*sys.argv[1:])
