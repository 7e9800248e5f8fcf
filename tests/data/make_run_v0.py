"""Writes tests/data/run_v0: a small run saved by the code as it was before the
package moved into stages (commit 6fb38d9), for tests/test_compat.py.

  git worktree add /tmp/old 6fb38d9
  PYTHONPATH=/tmp/old .venv/bin/python tests/data/make_run_v0.py tests/data/run_v0

It saves what `mt2 train` saves (config.json, an Orbax checkpoint of the whole
train state at step 3) and, in expected.npz, a fixed input and the model's
named outputs on it, computed by that old code.
"""

import pathlib
import sys

import jax
import numpy as np


def main(out: str) -> None:
  from mt2_jax import checkpoint, model as model_lib, train_step  # The old, flat layout.
  import configs.mt2 as mt2_config
  config = mt2_config.get_config("runlocal")
  config.data.segment_frames = 16
  config.model.width, config.model.depth, config.model.mlp_dim = 24, 1, 32
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  checkpoint.save_config(out, config)
  model = model_lib.build_model(config)
  tx = train_step.make_optimizer(config)
  mesh = train_step.single_device_mesh()
  state = train_step.create_train_state(config, model, tx, mesh)
  state = state.replace(step=jax.numpy.asarray(3, jax.numpy.int32))
  ckpt = checkpoint.Checkpointer(out)
  ckpt.save(3, state)
  ckpt.close()
  x = np.random.default_rng(0).random((2, config.data.crop_bins, 16), np.float32)
  outputs = model.apply({"params": state.params}, x)
  np.savez(out / "expected.npz", x=x, **{k: np.asarray(v) for k, v in outputs.items()})


if __name__ == "__main__":
  main(sys.argv[1])
