"""Host-side runtime settings that make XLA:CPU steps fast; applied on `import mt2_jax`.

glibc's malloc serves every allocation above 32 MiB with a fresh mmap and
returns it on free, and each worker thread gets its own arena whose heaps it
shrinks eagerly. XLA:CPU allocates a train step's temporaries (gigabytes at
the paper's shape) on every call, so each step touched all of that memory
anew: ~60k page faults and ~0.1 s of kernel time per tiny block, a quarter of
the step (RESULTS.md, "host memory"). `tune_malloc` keeps freed memory in one
arena for reuse instead: no mmap for large blocks, no trimming, one arena.
The process keeps its peak heap for its lifetime, which is what a training or
benchmark process wants. Set MT2_MALLOC_TUNING=0 to leave malloc alone.

It must run before JAX starts its thread pools (threads keep the arena they
first used), hence from the package's __init__.
"""

import ctypes
import ctypes.util
import os
import sys

# mallopt(3) parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_applied = None


def tune_malloc() -> bool:
  """Applies the settings above once; True if glibc accepted all of them."""
  global _applied
  if _applied is not None:
    return _applied
  _applied = False
  if os.environ.get("MT2_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
    return _applied
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # Not glibc (e.g. musl): nothing to tune.
    return _applied
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  # -1 is SIZE_MAX once glibc widens it: never trim the heap's top.
  settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1), (_M_ARENA_MAX, 1))
  _applied = all(mallopt(param, value) == 1 for param, value in settings)
  return _applied
