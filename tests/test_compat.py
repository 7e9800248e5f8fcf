"""Runs saved by earlier versions of the code still load (tests/data/run_v0).

run_v0 was written by tests/data/make_run_v0.py on the flat layout before the
package moved into stages (commit 6fb38d9); expected.npz holds that code's
outputs on a fixed input.
"""

import pathlib

import numpy as np
import pytest

from mt2_jax import embed
from mt2_jax import model as model_lib
from mt2_jax.train import checkpoint
from mt2_jax.train import step as train_step

RUN_V0 = pathlib.Path(__file__).parent / "data" / "run_v0"


def test_a_run_saved_before_the_move_restores_with_the_same_outputs():
  config, params, step = checkpoint.load_run(RUN_V0)
  assert step == 3
  expected = np.load(RUN_V0 / "expected.npz")
  out = model_lib.build_model(config).apply({"params": params}, expected["x"])
  names = sorted(k for k in expected.files if k != "x")
  assert sorted(out) == names
  for name in names:
    np.testing.assert_allclose(np.asarray(out[name]), expected[name], atol=1e-5, err_msg=name)


def test_inference_restores_parameters_without_building_the_optimizer(monkeypatch):
  def no_optimizer(*args, **kwargs):
    raise AssertionError("inference must not build the trainer's optimizer")
  monkeypatch.setattr(train_step, "make_optimizer", no_optimizer)
  monkeypatch.setattr(train_step, "abstract_train_state", no_optimizer)
  embedder = embed.Embedder.from_run(RUN_V0)  # The public path users call.
  assert embedder.step == 3
  wave = np.random.default_rng(1).standard_normal(embedder.sample_rate).astype(np.float32) * 0.1
  feats = embedder.embed(wave, embedder.sample_rate)
  for name in embedder.feature_names:
    assert feats[name].shape == (embedder.width,) and np.isfinite(feats[name]).all()


def test_a_missing_checkpoint_is_named(tmp_path):
  (tmp_path / "config.json").write_text((RUN_V0 / "config.json").read_text())
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    checkpoint.load_run(tmp_path)
