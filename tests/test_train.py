"""`mt2 train`: loss goes down, shardings, exact resume after SIGTERM, resharding, bad configs."""

import json
import logging
import os
import re

import jax
import numpy as np
import pytest
import soundfile as sf

from mt2_jax import sharding

from mt2_jax.train import checkpoint
from mt2_jax import config_defaults
from mt2_jax import model as model_lib
from mt2_jax.data import prepare
from mt2_jax.train import loop as train
from mt2_jax.train import step as train_step

from conftest import sigterm_during


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """16 short tracks of two-note chords: a dataset that trains in seconds."""
  audio = tmp_path_factory.mktemp("audio")
  rng = np.random.default_rng(0)
  t = np.arange(int(22050 * 2.0)) / 22050
  for i in range(16):
    f1, f2 = 110 * 2 ** (rng.integers(0, 36, size=2) / 12)
    sf.write(audio / f"t{i:02d}.wav", (np.sin(2 * np.pi * f1 * t) + np.sin(2 * np.pi * f2 * t)) / 2, 22050)
  out = tmp_path_factory.mktemp("data")
  prepare.prepare(audio, out, progress=False)
  return str(out)


def runlocal_mt2():
  """What configs/mt2.py:runlocal gives."""
  return config_defaults.apply_arg(config_defaults.base_config(), "runlocal")


def small_config(data_dir, overrides=None, **kw):
  config = runlocal_mt2()
  # What these tests check (resume, signals, metrics, checkpoints) does not depend
  # on where the class tokens meet the frames; without class-attention blocks the
  # step compiles ~1/3 faster (test_model.py and the sharding test cover them).
  config.model.class_blocks = 0
  config.model.token_reads = "all"  # Class blocks to split the frame token between: none.
  config.data_dir = data_dir
  config.data.segment_frames = 32
  config.total_steps = 12
  config.checkpoint_every = 4
  config.log_every = 2
  for k, v in {**(overrides or {}), **kw}.items():
    node = config
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  return config


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f]


def test_train_step_reduces_loss_with_configured_shardings():
  assert jax.device_count() == 8
  for rules, fsdp in (("data", 1), ("fsdp", 2)):
    config = runlocal_mt2()
    config.data.segment_frames = 32
    config.sharding, config.mesh.fsdp = rules, fsdp
    config.optim.warmup_steps = 1
    config.optim.lr = 2e-3
    mesh = sharding.make_mesh(config)
    model = model_lib.build_model(config)
    tx = train_step.make_optimizer(config)
    state = train_step.create_train_state(config, model, tx, mesh)
    kernel = state.params["backbone"]["patch_embed"]["kernel"]
    expected = (None, "fsdp") if rules == "fsdp" else (None, None)
    assert tuple(kernel.sharding.spec) == expected
    batch = train_step.synthetic_batch(config, mesh)
    assert batch["x_a"].sharding.spec == sharding.BATCH_SPEC
    assert len(batch["x_a"].addressable_shards) == 8
    assert batch["x_a"].addressable_shards[0].data.shape[0] == config.batch_size // 8
    step = train_step.make_train_step(config, model, tx, mesh)
    losses = []
    for _ in range(8):
      state, m = step(state, batch)
      losses.append(float(m["loss"]))
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.1, losses
    assert tuple(state.params["backbone"]["patch_embed"]["kernel"].sharding.spec) == expected


def test_lr_scale_multiplies_one_parts_updates_and_keeps_the_state_structure():
  from mt2_jax import config_validation
  config = runlocal_mt2()
  assert config.model.class_blocks == 1
  ones = lambda *shape: np.ones(shape, np.float32)
  params = {"head_cpsd": {"dense": {"kernel": ones(4, 12)}},
            "head_cpsd2": {"bias": ones(12)},  # Not under 'head_cpsd/'.
            "head_ntxent": {"fc1": {"kernel": ones(4, 4)}},
            "backbone": {"block00": {"kernel": ones(4, 4)},
                         "cls_equivariant_block00": {"kernel": ones(4, 4)},
                         "cls_contrastive_block00": {"kernel": ones(4, 4)}}}
  grads = jax.tree.map(
      lambda p: np.random.default_rng(0).standard_normal(p.shape).astype(np.float32), params)

  def updates(config):
    tx = train_step.make_optimizer(config)
    state = tx.init(params)
    for _ in range(2):  # Past the first step, whose warm-up learning rate is 0.
      got, state = tx.update(grads, state, params)
    return got, jax.tree.structure(tx.init(params))

  flat = lambda tree: {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(tree)}
  for loss in config.losses.values():
    loss.lr_scale = 1.0
  want, plain_state = updates(config)
  assert all(np.abs(u).max() > 0 for u in flat(want).values())

  def factors(config):
    got, state = updates(config)
    assert state == plain_state  # Checkpoints restore whatever the rates.
    return {k: float(np.median(flat(got)[k] / v)) for k, v in flat(want).items()}

  config.losses.cpsd.lr_scale = 3.0  # CPSD's head and its token's class block (sessions 10-20's default).
  f = factors(config)
  assert {k for k, v in f.items() if abs(v - 3) < 1e-5} == {
      "['head_cpsd']['dense']['kernel']", "['backbone']['cls_equivariant_block00']['kernel']"}
  assert {k for k, v in f.items() if abs(v - 1) < 1e-6} == set(f) - {
      "['head_cpsd']['dense']['kernel']", "['backbone']['cls_equivariant_block00']['kernel']"}
  config.optim.lr_scale = "backbone/cls_equivariant_block00=0.5, backbone/block00=2"  # Wins.
  f = factors(config)
  assert f["['head_cpsd']['dense']['kernel']"] == pytest.approx(3, rel=1e-5)
  assert f["['backbone']['cls_equivariant_block00']['kernel']"] == pytest.approx(0.5, rel=1e-5)
  assert f["['backbone']['block00']['kernel']"] == pytest.approx(2, rel=1e-5)
  assert f["['head_cpsd2']['bias']"] == pytest.approx(1, rel=1e-6)
  config.optim.lr_scale = ""
  config.model.class_blocks = 0  # No class block of its own: the head alone.
  config.model.token_reads = "all"
  f = factors(config)
  assert {k for k, v in f.items() if abs(v - 3) < 1e-5} == {"['head_cpsd']['dense']['kernel']"}

  config.optim.lr_scale = "head_equivariant=3"
  tx = train_step.make_optimizer(config)
  with pytest.raises(ValueError, match="no parameter path starts with"):
    tx.update(grads, tx.init(params), params)
  for bad in ("head_cpsd", "head_cpsd=0", "=3", "head_cpsd=x"):
    config.optim.lr_scale = bad
    with pytest.raises(ValueError, match=r"optim\.lr_scale"):
      config_validation.validate(config)
  config.optim.lr_scale = ""
  for bad in (0.0, -1.0, float("nan")):
    config.losses.cpsd.lr_scale = bad
    with pytest.raises(ValueError, match=r"losses\.cpsd\.lr_scale"):
      config_validation.validate(config)


def test_data_parallel_step_keeps_each_devices_rows_on_it():
  """The views of a track are batched side by side, so no device sends rows to
  another: the data-parallel program's only collectives are the gradient
  all-reduce and NT-Xent's gather of embeddings (and never an all-to-all, which
  concatenating [A; B; A'] along the sharded batch needs)."""
  config = runlocal_mt2()
  config.data.segment_frames = 32
  mesh = sharding.make_mesh(config)
  model = model_lib.build_model(config)
  tx = train_step.make_optimizer(config)
  state = train_step.abstract_train_state(config, model, tx, mesh)
  batch = train_step.synthetic_batch(config, mesh)
  step = train_step.make_train_step(config, model, tx, mesh)
  with jax.set_mesh(mesh):
    hlo = step.jitted.lower(state, batch).compile().as_text()
  assert "all-reduce" in hlo
  assert "all-to-all" not in hlo and "collective-permute" not in hlo


def test_sigterm_then_resume_equals_uninterrupted_run(data_dir, tmp_path, monkeypatch):
  config = small_config(data_dir)
  full = tmp_path / "full"
  train.train(config, full, progress=False)

  real_factory = train_step.make_train_step
  part = tmp_path / "part"
  monkeypatch.setattr(train_step, "make_train_step", sigterm_during(real_factory, 6))
  out = train.train(config, part, progress=False)
  assert out["step"] == 6
  assert checkpoint.Checkpointer(part).latest_step() == 6
  monkeypatch.setattr(train_step, "make_train_step", real_factory)
  train.train(config, part, progress=False)

  drop = ("views_per_sec", "steps_per_sec")
  strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]
  assert strip(read_metrics(part)) == strip(read_metrics(full))
  _, p_full, s1 = checkpoint.load_run(full)
  _, p_part, s2 = checkpoint.load_run(part)
  assert s1 == s2 == 12
  jax.tree.map(np.testing.assert_array_equal, p_full, p_part)  # Bitwise on CPU.


def test_metrics_and_tensorboard_are_written(data_dir, tmp_path, caplog):
  config = small_config(data_dir, total_steps=6)
  train.train(config, tmp_path, progress=False)
  rows = read_metrics(tmp_path)
  assert [r["step"] for r in rows] == [2, 4, 6]
  for key in ("loss", "cpsd", "ntxent", "ntxent_acc", "lr", "grad_norm", "views_per_sec"):
    assert key in rows[-1] and np.isfinite(rows[-1][key])
  assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())
  # Finished runs are a no-op when started again; a changed config is named.
  with caplog.at_level(logging.WARNING):
    assert train.train(config, tmp_path, progress=False)["step"] == 6
    assert "another config" not in caplog.text
    config.optim.lr *= 2
    train.train(config, tmp_path, progress=False)
  assert f"another config; now: optim.lr: {config.optim.lr / 2!r} -> {config.optim.lr!r}" in caplog.text


def test_config_changes_skip_an_added_key_at_its_neutral_value():
  """A run saved before data.group_pattern (or losses.ntxent.pairs, data.b_offset)
  existed is not 'changed' by its default."""
  old, new = config_defaults.base_config(), config_defaults.base_config()
  del old.data["group_pattern"]
  assert checkpoint.config_changes(old, new) == []
  new.data.group_pattern = "^[^_]+"
  assert checkpoint.config_changes(old, new) == ["data.group_pattern: '' -> '^[^_]+'"]
  del old.losses.ntxent["pairs"], old.data["b_offset"]
  assert checkpoint.config_changes(old, new) == ["data.group_pattern: '' -> '^[^_]+'"]


def test_checkpoint_from_8_devices_restores_on_4(data_dir, tmp_path):
  config = small_config(data_dir, total_steps=8)
  train.train(config, tmp_path, progress=False)
  model = model_lib.build_model(config)
  tx = train_step.make_optimizer(config)
  ckpt = checkpoint.Checkpointer(tmp_path)
  states = []
  for devices in (jax.devices(), jax.devices()[:4]):
    mesh = sharding.make_mesh(config, devices=devices)
    states.append(ckpt.restore(8, train_step.abstract_train_state(config, model, tx, mesh)))
  assert states[1].params["backbone"]["pos_embed"].sharding.mesh.size == 4
  jax.tree.map(np.testing.assert_array_equal, states[0].params, states[1].params)
  assert int(states[1].step) == 8


def test_non_finite_loss_stops_with_the_term_named(data_dir, tmp_path):
  config = small_config(data_dir, total_steps=8)
  config.losses.ntxent.temperature = 1e-45  # Underflows to 0 in float32: inf logits.
  with pytest.raises(train.NonFiniteLossError, match="step 1: non-finite .*ntxent"):
    train.train(config, tmp_path, progress=False)
  assert checkpoint.Checkpointer(tmp_path).latest_step() is None


@pytest.mark.parametrize("override, message", [
    ({"data.segment_frames": 4000}, "segment"),
    ({"batch_size": 12}, "config.batch_size"),
    ({"losses.cpsd.token": "nope"}, "config.losses.cpsd.token"),
    ({"data_dir": "/does/not/exist"}, "config.data_dir"),
])
def test_bad_configs_fail_before_compiling(data_dir, tmp_path, monkeypatch, override, message):
  compiled = []
  monkeypatch.setattr(train_step, "make_train_step", lambda *a: compiled.append(1))
  monkeypatch.setattr(train_step, "create_train_state", lambda *a: compiled.append(1))
  config = small_config(data_dir, override)
  with pytest.raises(ValueError, match=message):
    train.train(config, tmp_path, progress=False)
  assert not compiled


def test_two_processes_give_the_losses_of_one(data_dir, tmp_path):
  """2 processes x 4 CPU devices, joined by jax.distributed on localhost == 1 x 8
  == `mt2 train` splitting an 8-core CPU into its own per-core devices."""
  import socket
  import subprocess
  import sys
  overrides = ["--config.data.segment_frames=32", "--config.total_steps=6", "--config.log_every=2",
               "--config.checkpoint_every=3", f"--config.data_dir={data_dir}", "--noprogress",
               "--config.model.class_blocks=0",  # As small_config: compiles faster.
               "--config.model.token_reads=all"]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  mt2 = [sys.executable, "-m", "mt2_jax.cli", "train", "--config=configs/mt2.py:runlocal"]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  one = subprocess.run(mt2 + [f"--workdir={tmp_path / 'one'}"] + overrides, cwd=root, capture_output=True,
                       text=True, env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  assert one.returncode == 0, one.stderr[-3000:]
  # Quiet by default (mt2_jax/cli): Orbax logs every save's options at INFO.
  assert not re.search(r"^I\d{4} ", one.stderr, re.M), one.stderr[-3000:]
  cores = subprocess.run(mt2 + [f"--workdir={tmp_path / 'cores'}"] + overrides, cwd=root,
                         capture_output=True, text=True, env={**env, "MT2_CPU_DEVICES": "8"})
  assert cores.returncode == 0, cores.stderr[-3000:]
  assert json.loads(cores.stdout.splitlines()[-1])["devices"] == 8
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
  procs = [subprocess.Popen(
      mt2 + [f"--workdir={tmp_path / 'two'}", f"--coordinator_address=localhost:{port}",
             "--num_processes=2", f"--process_id={i}"] + overrides,
      cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
  losses = lambda w: [(r["step"], r["loss"], r["cpsd"], r["ntxent"]) for r in read_metrics(tmp_path / w)]
  assert [s for s, *_ in losses("two")] == [2, 4, 6]
  np.testing.assert_allclose(np.array(losses("two")), np.array(losses("one")), rtol=1e-5)
  np.testing.assert_allclose(np.array(losses("cores")), np.array(losses("one")), rtol=1e-5)
