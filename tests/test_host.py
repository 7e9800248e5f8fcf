"""host: tuned malloc reuses freed large blocks; use_cpu_cores splits the CPU into per-core devices."""

import json
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


@pytest.mark.parametrize("batch, cores, tokens, expected", [
    (16, 2, None, 2), (6, 4, None, 3), (7, 4, None, 1), (2, 16, None, 2), (0, 4, None, 1),
    (16, 2, 525, 2),  # tiny/173: 8 tracks of 525 tokens a device.
    (2, 2, 525, 1),   # base/173 at 2 tracks: 525 tokens a device would be too few.
    (8, 8, 1100, 4),  # 2 tracks a device (2200 tokens) suffice, 1 does not.
])
def test_cpu_devices_split_the_batch_evenly_with_enough_tokens_each(batch, cores, tokens, expected):
  from mt2_jax import host
  assert host.cpu_devices_for(batch, cores, tokens) == expected


# Calls use_cpu_cores in a fresh process, then reports what JAX ended up with.
_CORES = r"""
import json, sys
from mt2_jax import host
import jax
if sys.argv[2] == "started":
  jax.devices()
n = host.use_cpu_cores(int(sys.argv[1]))
print(json.dumps({"set": n, "devices": jax.device_count()}))
"""


def _use_cpu_cores(batch, when="fresh", **env):
  base = {k: v for k, v in os.environ.items()
          if k not in ("XLA_FLAGS", "JAX_PLATFORMS", "MT2_CPU_DEVICES", "JAX_NUM_CPU_DEVICES")}
  out = subprocess.run([sys.executable, "-c", _CORES, str(batch), when], env={**base, **env},
                       capture_output=True, text=True, check=True).stdout
  return json.loads(out.splitlines()[-1])


def test_use_cpu_cores_makes_one_device_per_core_that_splits_the_batch():
  got = _use_cpu_cores(16, MT2_CPU_DEVICES="3")  # 3 cores; 16 tracks split over 2.
  assert (got["set"], got["devices"]) == (2, 2)
  got = _use_cpu_cores(12, MT2_CPU_DEVICES="3")
  assert (got["set"], got["devices"]) == (3, 3)


@pytest.mark.parametrize("env, when", [
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}, "fresh"),  # The user's choice.
    ({"MT2_CPU_DEVICES": "0"}, "fresh"),
    ({"MT2_CPU_DEVICES": "4"}, "started"),  # Too late: JAX is running.
])
def test_use_cpu_cores_leaves_an_explicit_or_started_jax_alone(env, when):
  got = _use_cpu_cores(16, when, **env)
  assert got["set"] is None
  assert got["devices"] == (4 if "XLA_FLAGS" in env else 1)
