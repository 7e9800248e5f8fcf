"""`mt2 train`: sharded, multi-host, preemption-safe pretraining with exact resume.

  mt2 train --config=configs/mt2.py:runlocal --workdir=/tmp/mt2 --config.data_dir=DATA
  # several hosts (automatic on SLURM and Cloud TPU; explicit elsewhere):
  mt2 train ... --coordinator_address=host0:1234 --num_processes=2 --process_id=$I

--config.KEY=VALUE overrides any key of the config. The config is validated
before anything compiles; running the same command again resumes from the
last checkpoint in --workdir. WORKDIR holds config.json, checkpoints/,
metrics.jsonl and tensorboard/; the last line of stdout is the last step's
metrics as JSON. On a machine without an accelerator the CPU is split into
one JAX device per core (mt2_jax/host.py). The loop: mt2_jax/train/loop.py.
"""

import json
import os
import sys
from typing import Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

from mt2_jax.train import loop  # Imports no JAX: host.use_cpu_cores must come first.

# allow_override: info and views also have --config, embed --workdir
# (mt2_jax/cli/__init__.py).
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/mt2.py:runlocal.", lock_config=True,
    allow_override=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, config.",
                               allow_override=True)
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).",
                             allow_override=True)
_NPROC = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).",
                              allow_override=True)
_PID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).",
                            allow_override=True)
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar (process 0).",
                              allow_override=True)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None or not _WORKDIR.value:
    raise app.UsageError("usage: mt2 train --config=configs/mt2.py[:ARGS] --workdir=DIR")
  from mt2_jax import host  # pylint: disable=g-import-not-at-top
  from mt2_jax.train import step as train_step  # pylint: disable=g-import-not-at-top
  processes = _NPROC.value or int(os.environ.get("SLURM_NTASKS", "1"))
  if config.batch_size % processes == 0:  # Else check_runnable says why.
    host.use_cpu_cores(config.batch_size // processes, train_step.tokens_per_track(config))
  loop.init_distributed(_COORD.value, _NPROC.value, _PID.value)
  try:
    final = loop.train(config, _WORKDIR.value, progress=_PROGRESS.value)
  except (ValueError, FileNotFoundError, loop.NonFiniteLossError) as e:
    print(f"mt2 train: {e}", file=sys.stderr)
    sys.exit(1)
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    print(json.dumps({**final, "devices": jax.device_count()}))
