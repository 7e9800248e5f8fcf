"""host.tune_malloc: a freed large block is reused instead of being faulted in again."""

import os
import subprocess
import sys

import pytest

# Allocates, touches and frees 64 MiB twice through libc; prints the minor
# page faults of the second round. Without the tuning glibc serves 64 MiB with
# a fresh mmap each time (16k faults of 4 KiB); with it the block is reused.
_PROBE = r"""
import ctypes, resource
import mt2_jax
from mt2_jax import host
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
size = 64 << 20
def round_trip():
  p = libc.malloc(size)
  ctypes.memset(p, 1, size)
  libc.free(p)
round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
round_trip()
print(host._applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(tuning: str) -> tuple[str, int]:
  env = dict(os.environ, MT2_MALLOC_TUNING=tuning)
  out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                       check=True).stdout.split()
  return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_tuned_malloc_reuses_large_blocks():
  applied, tuned = _faults("1")
  off, untuned = _faults("0")
  assert (applied, off) == ("True", "False")
  pages = (64 << 20) // 4096
  assert untuned > pages // 2, untuned  # The default: every page faulted in again.
  assert tuned < pages // 20, tuned
