"""Test setup: 8 fake CPU devices and parsed absl flags, before JAX is imported."""

import os
import tempfile

# Must be set before jax is first imported anywhere in the test process.
# Compiling is most of the suite's time and no test asserts speed, so XLA:CPU
# skips its slow LLVM passes (the same programs, slower code, half the compile
# time), and one compilation cache, shared by both pytest workers and the
# tests' subprocesses, compiles each program once (keys hash the program, the
# flags and the JAX version, so a cache left by an older suite is safe).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8"
                      " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"mt2_jax_tests_xla_cache_{os.getuid()}"))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags  # noqa: E402

# Grain worker processes and absl-based code need parsed flags.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()


def sigterm_during(make_train_step, step: int):
  """A `make_train_step` whose step function sends this process a real SIGTERM
  while it runs step `step` (1-based): what a preempted job receives."""
  import signal

  def factory(*args):
    step_fn = make_train_step(*args)

    def wrapped(state, batch):
      if int(state.step) == step - 1:
        os.kill(os.getpid(), signal.SIGTERM)
      return step_fn(state, batch)
    return wrapped
  return factory


def load_repo_file(relpath: str):
  """The module of a file of the repository that is not in the package
  (configs/*.py, launch/*.py), e.g. load_repo_file('configs/mt2.py')."""
  import importlib.util
  import pathlib
  path = pathlib.Path(__file__).resolve().parent.parent / relpath
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
