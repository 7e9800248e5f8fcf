"""Host-side runtime settings that make XLA:CPU train steps fast.

Memory (`tune_malloc`, run on `import mt2_jax`). glibc's malloc serves every
allocation above 32 MiB with a fresh mmap and returns it on free, and each
worker thread gets its own arena whose heaps it shrinks eagerly. XLA:CPU
allocates a train step's temporaries (gigabytes at the paper's shape) on every
call, so each step touched all of that memory anew: ~60k page faults and
~0.1 s of kernel time per tiny block, a quarter of the step (RESULTS.md, "host
memory"). `tune_malloc` keeps freed memory in one arena for reuse instead: no
mmap for large blocks, no trimming, one arena. The process keeps its peak heap
for its lifetime, which is what a training or benchmark process wants. Set
MT2_MALLOC_TUNING=0 to leave malloc alone. It must run before JAX starts its
thread pools (threads keep the arena they first used), hence from the
package's __init__.

Cores (`use_cpu_cores`, called by `mt2 train`, `mt2 demo` and `mt2 bench`
before JAX starts). XLA:CPU runs a batched matmul (attention's B*N products of
[L x H] by [H x L]) one batch element after another, each split over the
cores, which such small matrices do badly (~50 GFLOP/s per core against ~90 for
the dense layers), and steps through the rest of the program with idle cores
between its kernels. One XLA device per core, with the train step
data-parallel over them (the program JAX runs on 8 GPUs), runs one copy of the
program per core side by side: the tiny/173 step is ~10% faster on 2 cores, the
demo's model ~25% (benchmarks/RESULTS.md). MT2_CPU_DEVICES=0 turns it off.
"""

import ctypes
import ctypes.util
import importlib.util
import logging
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


# Packages whose presence means JAX will train on an accelerator, not the CPU.
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "libtpu")


def cpu_cores() -> int:
  """Cores this process may run on (its affinity mask, as taskset/cgroups set it)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


# Each device repeats the gradient all-reduce's share and the whole optimizer
# update, costs that grow with the parameters as the step's compute grows with
# parameters x tokens: below ~2k tokens a device they outweigh the gain
# (base/173 at 1 track a device: 0.76x torch on 2 devices, 1.03x on one).
MIN_TOKENS_PER_DEVICE = 2048


def cpu_devices_for(batch_size: int, cores: int | None = None,
                    tokens_per_track: int | None = None) -> int:
  """The most CPU devices, at most one per core, that split `batch_size` evenly
  and (given tokens_per_track) give each at least MIN_TOKENS_PER_DEVICE tokens."""
  cores = cpu_cores() if cores is None else cores
  fits = lambda n: batch_size % n == 0 and (n == 1 or tokens_per_track is None or
                                            batch_size // n * tokens_per_track >= MIN_TOKENS_PER_DEVICE)
  return max(n for n in range(1, max(1, min(cores, batch_size)) + 1) if fits(n))


def use_cpu_cores(batch_size: int | None = None, tokens_per_track: int | None = None) -> int | None:
  """On a CPU-only host, one XLA CPU device per core.

  Sets `jax_num_cpu_devices` to `cpu_devices_for(batch_size,
  tokens_per_track=...)` (one per core when batch_size is None: the caller
  picks its batches and how many devices each uses). Must run before JAX
  initialises its backends (the first `jax.devices()` or computation).
  Returns the device count set, or None where it leaves JAX alone: when
  MT2_CPU_DEVICES=0, when XLA_FLAGS or JAX_NUM_CPU_DEVICES already choose a
  device count, when JAX_PLATFORMS or an installed plugin says an accelerator
  will be used, when only one device would result, or when JAX has started.
  MT2_CPU_DEVICES=N asks for N devices (or the most below N that split the
  batch) whatever their share of tokens.
  """
  wanted = os.environ.get("MT2_CPU_DEVICES", "")
  if wanted and not wanted.isdigit():
    raise ValueError(f"MT2_CPU_DEVICES must be a number of devices (0: off), got {wanted!r}")
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if (wanted == "0" or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
      or os.environ.get("JAX_NUM_CPU_DEVICES")
      or (platforms and platforms != "cpu")
      or (not platforms and any(importlib.util.find_spec(p) for p in _ACCELERATOR_PLUGINS))):
    return None
  if batch_size is None:
    n = int(wanted or cpu_cores())
  elif wanted:  # The user's count, as far as it splits the batch.
    n = cpu_devices_for(batch_size, int(wanted))
  else:
    n = cpu_devices_for(batch_size, cpu_cores(), tokens_per_track)
  if n < 2:
    return None
  import jax  # pylint: disable=g-import-not-at-top
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError:  # JAX has started: too late to change devices.
    logging.info("JAX already initialised; not splitting the CPU into %d devices", n)
    return None
  logging.info("CPU: %d XLA devices, one per core, data parallel over the batch", n)
  return n
