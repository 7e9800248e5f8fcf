"""`mt2 info --config=configs/mt2.py[:ARGS]`: parameters, FLOPs and outputs of a config.

Prints a readable summary, then one line of JSON (the last line of stdout):
parameter counts (total, backbone, each head), FLOPs of one view's forward
and of one track's training step (XLA's cost analysis of the compiled
programs, or analytic with --nocompiled_flops), token count and the shape of
every output. Nothing of the model's size is allocated. The fields:
mt2_jax/info.py.
"""

import json
from typing import Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

from mt2_jax import config_validation
from mt2_jax import info

# allow_override: train and views also have --config (mt2_jax/cli/__init__.py).
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/mt2.py:runlocal.", lock_config=True,
    allow_override=True)
_COMPILED_FLOPS = flags.DEFINE_bool(
    "compiled_flops", True,
    "Count FLOPs with XLA's cost analysis of the compiled programs (else analytic only).",
    allow_override=True)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/mt2.py:runlocal")
  config_validation.validate(config)
  summary = info.summarize(config, compiled_flops=_COMPILED_FLOPS.value)
  print(info.format_summary(summary))
  print(json.dumps(summary), flush=True)
