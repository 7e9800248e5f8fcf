"""The Grain views pipeline (docs/design.md §1.2): shift sign, crops, determinism, resume, sharding."""

import json
import logging
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
import soundfile as sf

from mt2_jax.data import dataset
from mt2_jax.data import augment, pipeline
from mt2_jax.data.prepare import prepare

ROOT = pathlib.Path(__file__).resolve().parent.parent
SR = 22050
SEGMENT = 48           # needs 96 frames; 3 s at 22 050 Hz give 130
LONG_MIDI = range(40, 48)  # rows 19..26 of the CQT, inside A and A' for every offset
SHORT_MIDI = (60, 62)  # 1.5 s: 65 frames, too short for two segments


def tone(midi: int, seconds: float) -> np.ndarray:
  t = np.arange(int(seconds * SR)) / SR
  return (0.5 * np.sin(2 * np.pi * 440.0 * 2 ** ((midi - 69) / 12) * t)).astype(np.float32)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """8 pure tones of 3 s (tone40_g0..tone47_g1, g: the parity) and 2 of 1.5 s (short60,
  short62), in 3 shards."""
  root = tmp_path_factory.mktemp("pipeline")
  audio = root / "audio"
  audio.mkdir()
  for m in LONG_MIDI:
    sf.write(audio / f"tone{m}_g{m % 2}.wav", tone(m, 3.0), SR)
  for m in SHORT_MIDI:
    sf.write(audio / f"short{m}.wav", tone(m, 1.5), SR)
  summary = prepare(audio, root / "data", num_workers=1, files_per_shard=4, progress=False)
  assert summary.total_records == 10
  return str(root / "data")


def make_config(data_dir, **data) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(dict(
      seed=0, data_dir=data_dir, batch_size=4,
      cqt=dict(sample_rate=SR, fmin=27.5, n_bins=99, bins_per_octave=12, hop_length=512),
      data=dict(segment_frames=SEGMENT, crop_bins=84, max_offset=12, num_workers=0,
                prefetch_buffer_size=2)))
  config.data.update(data)
  return config


def take(config, n, state=None, **kwargs):
  """n batches (numpy), and the iterator's state after them."""
  it = pipeline.make_iterator(config, **kwargs)
  try:
    if state is not None:
      it.set_state(state)
    batches = [{k: np.array(v) for k, v in next(it).items()} for _ in range(n)]
    return batches, it.get_state()
  finally:
    it.close()


def assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def peak_row(x):
  """[B, bins, frames] -> [B] the row with the most energy (a pure tone's pitch)."""
  return np.asarray(x, np.float32).mean(-1).argmax(-1)


def test_shift_sign_and_crops_match_the_record(data_dir):
  config = make_config(data_dir)
  batches, _ = take(config, 6, debug=True)
  source = dataset.open_split(data_dir, "train")
  shifts = []
  for b in batches:
    assert b["x_a"].shape == b["x_b"].shape == b["x_a_shift"].shape == (4, 84, SEGMENT)
    assert b["x_a"].dtype == np.float32 and b["shift"].dtype == np.int32
    # docs/design.md §1.2: a pitch at row r of A sits at row r - d of A'.
    np.testing.assert_array_equal(peak_row(b["x_a"]) - peak_row(b["x_a_shift"]), b["shift"])
    np.testing.assert_array_equal(peak_row(b["x_a"]), peak_row(b["x_b"]))  # same offset o
    for i in range(4):
      ex = source[int(b["record"][i])]
      assert ex["track_id"] == b["track_id"][i]
      cqt = ex["cqt"].astype(np.float32)
      o, d = int(b["offset"][i]), int(b["shift"][i])
      sa, sb = int(b["start_a"][i]), int(b["start_b"][i])
      assert abs(sa - sb) >= SEGMENT, "A and B overlap"
      assert 0 <= min(sa, sb) and max(sa, sb) + SEGMENT <= ex["num_frames"]
      assert 1 <= o <= 12 and 0 <= o + d <= 11 and d != 0
      np.testing.assert_array_equal(b["x_a"][i], cqt[o:o + 84, sa:sa + SEGMENT])
      np.testing.assert_array_equal(b["x_b"][i], cqt[o:o + 84, sb:sb + SEGMENT])
      np.testing.assert_array_equal(b["x_a_shift"][i], cqt[o + d:o + d + 84, sa:sa + SEGMENT])
      # The tone's pitch: MIDI m is CQT row m - 21 (fmin = A0 = MIDI 21).
      midi = int(ex["track_id"].decode().split("_")[0].removeprefix("tone"))
      assert peak_row(b["x_a"][i:i + 1])[0] == midi - 21 - o
    shifts += b["shift"].tolist()
  assert len(set(shifts)) > 5


def test_draws_cover_every_shift_and_crops_never_overlap():
  rng = np.random.default_rng(0)
  offsets = [augment.draw_offsets(rng, 12) for _ in range(3000)]
  d = {t - o for o, t in offsets}
  # t <= 11 and o >= 1 make d <= 10, but every non-zero pitch class is drawn.
  assert d <= set(range(-11, 12)) - {0}
  assert {x % 12 for x in d} == set(range(1, 12))
  assert {o for o, _ in offsets} == set(range(1, 13))
  for frames in (96, 97, 130, 400):
    starts = [augment.crop_starts(rng, frames, SEGMENT) for _ in range(500)]
    assert all(abs(a - b) >= SEGMENT and 0 <= min(a, b) and max(a, b) + SEGMENT <= frames
               for a, b in starts)
    if frames == 97:  # slack 1: all 6 ordered placements appear
      assert len(set(starts)) == 6


def test_draw_shifts_is_the_views_draw():
  # The shifts of batches made without data (benchmarks, compilation checks)
  # follow the views' own draw: [-11, 10], never 0, every pitch class.
  shifts = augment.draw_shifts(np.random.default_rng(0), 3000)
  assert shifts.dtype == np.int32 and shifts.min() == -11 and shifts.max() == 10
  assert 0 not in shifts and set(shifts % 12) == set(range(1, 12))


def test_seed_determinism_and_worker_count_independence(data_dir):
  config = make_config(data_dir)
  a, _ = take(config, 4, debug=True)
  b, _ = take(config, 4, debug=True)
  assert_same(a, b)
  two_workers, _ = take(config, 4, debug=True, num_workers=2)
  assert_same(a, two_workers)
  other = make_config(data_dir)
  other.seed = 1
  c, _ = take(other, 4, debug=True)
  assert any(not np.array_equal(x["x_a"], y["x_a"]) for x, y in zip(a, c))
  # Epochs visit every usable record once, in a fresh order each epoch.
  records = np.concatenate([x["record"] for x in a])
  epochs = np.concatenate([x["epoch"] for x in a])
  assert sorted(records[epochs == 0]) == sorted(records[epochs == 1])
  assert len(set(records[epochs == 0])) == 8


def test_bfloat16_option(data_dir):
  (batch,), _ = take(make_config(data_dir, dtype="bfloat16"), 1)
  (ref,), _ = take(make_config(data_dir), 1)
  assert batch["x_a"].dtype == jax.numpy.bfloat16
  np.testing.assert_array_equal(batch["x_a"].astype(np.float32),
                                ref["x_a"].astype(jax.numpy.bfloat16).astype(np.float32))


def test_colour_option_eqs_each_segment_and_keeps_the_transposition(data_dir):
  (plain,), _ = take(make_config(data_dir), 1, debug=True)
  (col,), _ = take(make_config(data_dir, colour_db=9.0), 1, debug=True)
  for k in ("record", "start_a", "start_b", "offset", "shift"):  # The same crops and shifts.
    np.testing.assert_array_equal(col[k], plain[k])
  moved = []
  for i in range(4):
    d = int(col["shift"][i])
    # Where the views are above the floor, each differs from its crop by one
    # curve over bins, constant in time, of at most 9 dB (9 / 80 units).
    curves = {}
    for k in ("x_a", "x_b", "x_a_shift"):
      diff = col[k][i] - plain[k][i]
      above = col[k][i] > 0
      curve = np.array([np.median(row[m]) if m.any() else np.nan for row, m in zip(diff, above)])
      np.testing.assert_allclose(np.where(above, diff, 0), np.where(above, curve[:, None], 0),
                                 atol=1e-6)
      assert np.nanmax(np.abs(curve)) <= 9 / 80 + 1e-6
      curves[k] = curve
    # A and A' share A's curve over absolute frequency: A' is still A moved by d bins.
    lo, hi = max(0, d), min(84, 84 + d)
    a, shifted = curves["x_a"][lo:hi], curves["x_a_shift"][lo - d:hi - d]
    ok = np.isfinite(a) & np.isfinite(shifted)
    np.testing.assert_allclose(a[ok], shifted[ok], atol=1e-6)
    moved.append(np.nanmean(np.abs(curves["x_a"] - curves["x_b"])))
  assert min(moved) > 0.005  # B has a curve of its own.
  with pytest.raises(ValueError, match="colour_db"):
    take(make_config(data_dir, colour_db=-1.0), 1)


def test_b_offset_own_cuts_b_at_its_own_transposition(data_dir):
  (plain,), _ = take(make_config(data_dir), 1, debug=True)
  batches, _ = take(make_config(data_dir, b_offset="own"), 6, debug=True)
  # Drawn after the paper's numbers: the same crops, offsets and shifts, A and A' unchanged.
  for k in ("record", "start_a", "start_b", "offset", "shift", "x_a", "x_a_shift"):
    np.testing.assert_array_equal(batches[0][k], plain[k], err_msg=k)
  source = dataset.open_split(data_dir, "train")
  shift_b = []
  for b in batches:
    assert b["shift_b"].dtype == np.int32
    # A pitch at row r of A sits at row r - shift_b of B (the sign of `shift`).
    np.testing.assert_array_equal(peak_row(b["x_a"]) - peak_row(b["x_b"]), b["shift_b"])
    for i in range(4):
      u, sb = int(b["offset"][i] + b["shift_b"][i]), int(b["start_b"][i])
      assert 1 <= u <= 12
      cqt = source[int(b["record"][i])]["cqt"].astype(np.float32)
      np.testing.assert_array_equal(b["x_b"][i], cqt[u:u + 84, sb:sb + SEGMENT])
    shift_b += b["shift_b"].tolist()
  assert 0 in shift_b and len(set(shift_b)) > 5
  assert "shift_b" not in plain
  with pytest.raises(ValueError, match="b_offset"):
    take(make_config(data_dir, b_offset="mine"), 1)


def test_resume_gives_the_next_batches(data_dir):
  config = make_config(data_dir)
  first, state = take(config, 3, debug=True)
  assert json.loads(state)["position"] == 12
  ref, _ = take(config, 6, debug=True)
  resumed, _ = take(config, 3, state=state, debug=True)
  assert_same(resumed, ref[3:])
  assert_same(first, ref[:3])
  # The state holds elements, not worker layout: resume with 2 workers.
  resumed2, _ = take(config, 3, state=state, debug=True, num_workers=2)
  assert_same(resumed2, ref[3:])
  # The views' dtype may change on resume; they are the same views, rounded.
  (half,), _ = take(make_config(data_dir, dtype="float16"), 1, state=state, debug=True)
  np.testing.assert_array_equal(half["x_a"].astype(np.float32), ref[3]["x_a"])
  # A state from another stream is refused, not silently misapplied.
  other = make_config(data_dir)
  other.seed = 5
  with pytest.raises(ValueError, match="seed"):
    take(other, 1, state=state)


def test_group_pattern_batches_whole_groups_and_resumes(data_dir):
  """data.group_pattern: each epoch visits the groups in a random order, a group's
  records one after another; 4 tones a parity and 4 a batch: one parity a batch."""
  config = make_config(data_dir, group_pattern=r"_(g\d)$")
  batches, state = take(config, 6, debug=True)
  parities = [{int(t.decode()[-1]) for t in b["track_id"]} for b in batches]
  assert all(len(p) == 1 for p in parities), parities
  assert {p.pop() for p in parities} == {0, 1}
  assert all(len(set(b["record"])) == 4 for b in batches)  # a group once an epoch
  ungrouped, _ = take(make_config(data_dir), 6, debug=True)
  assert any(len({int(t.decode()[-1]) for t in b["track_id"]}) == 2 for b in ungrouped)
  # The pattern is part of the stream: a position saved with it resumes only with it.
  resumed, _ = take(config, 2, state=state, debug=True)
  assert_same(resumed, take(config, 8, debug=True)[0][6:])
  with pytest.raises(ValueError, match="group_pattern"):
    take(make_config(data_dir), 1, state=state)
  with pytest.raises(ValueError, match=r"does not match the track id 'tone4\d_g\d'"):
    take(make_config(data_dir, group_pattern="_g1$"), 1)


def test_epoch_order_with_groups_keeps_each_group_together():
  groups = np.random.default_rng(0).integers(0, 30, 200)
  orders = [augment.epoch_order(0, e, 200, True, groups) for e in range(3)]
  for order in orders:
    assert sorted(order) == list(range(200))
    seen = groups[order]
    runs = seen[np.r_[True, seen[1:] != seen[:-1]]]  # one run per group
    assert len(runs) == len(set(groups))
  assert not np.array_equal(orders[0], orders[1])
  np.testing.assert_array_equal(orders[2], augment.epoch_order(0, 2, 200, True, groups))


def test_orbax_checkpoint_round_trip(data_dir, tmp_path):
  """Through the run's Checkpointer: grain.checkpoint.CheckpointHandler saves our state."""
  from mt2_jax.train.checkpoint import Checkpointer
  config = make_config(data_dir)
  ref, _ = take(config, 5)
  train_state = {"w": np.arange(3.0, dtype=np.float32)}
  it = pipeline.make_iterator(config)
  for _ in range(2):
    next(it)
  ckpt = Checkpointer(tmp_path)
  ckpt.save(2, train_state, it)
  it.close()
  fresh = pipeline.make_iterator(config)
  ckpt.restore(2, jax.tree.map(np.zeros_like, train_state), fresh)
  ckpt.close()
  assert_same([{k: np.array(v) for k, v in next(fresh).items()} for _ in range(3)], ref[2:])
  fresh.close()


def test_global_batch_on_eight_devices(data_dir):
  assert jax.device_count() == 8, "tests/conftest.py sets 8 fake CPU devices"
  mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "fsdp"))
  pspec = jax.sharding.PartitionSpec(("data", "fsdp"))
  config = make_config(data_dir)
  config.batch_size = 8
  it = pipeline.make_iterator(config, mesh, pspec)
  batch = next(it)
  it.close()
  (local,), _ = take(config, 1)
  for key in ("x_a", "x_b", "x_a_shift", "shift"):
    x = batch[key]
    assert isinstance(x, jax.Array)
    assert x.sharding == jax.sharding.NamedSharding(mesh, pspec)
    assert x.shape == local[key].shape and x.shape[0] == 8
    shards = x.addressable_shards
    assert len(shards) == 8
    assert all(s.data.shape == (1,) + x.shape[1:] for s in shards)
    np.testing.assert_array_equal(np.asarray(x), local[key])
  with pytest.raises(ValueError, match=r"config\.batch_size: 6 does not divide over the 8 devices"):
    config.batch_size = 6
    pipeline.make_iterator(config, mesh, pspec)


def test_processes_build_their_rows_of_the_same_global_batch(data_dir):
  config = make_config(data_dir)
  plans = [pipeline.make_plan(config, shard=(i, 2)) for i in range(2)]
  assert [p.local_batch_size for p in plans] == [2, 2]
  (whole,), _ = take(config, 1, debug=True)
  parts = [take(config, 1, debug=True, shard=(i, 2))[0][0] for i in range(2)]
  assert all(p["x_a"].shape[0] == 2 for p in parts)
  for key in ("x_a", "x_b", "x_a_shift", "shift", "record"):
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_short_records_are_reported_and_left_out(data_dir, caplog):
  source = dataset.open_split(data_dir, "train")
  short = {i for i in range(len(source)) if source[i]["track_id"].startswith(b"short")}
  assert len(short) == 2
  with caplog.at_level(logging.WARNING):
    plan = pipeline.make_plan(make_config(data_dir))
  text = caplog.text
  assert "2 of 10" in text and "short60" in text and "short62" in text
  assert not short & set(plan.records.tolist()) and len(plan.records) == 8
  # prepare lists num_frames in _parts/, so no record had to be scanned and cached.
  assert not (pathlib.Path(data_dir) / "_cache" / "num_frames-train.npz").exists()
  np.testing.assert_array_equal(pipeline.record_lengths(data_dir, "train"),
                                [source[i]["num_frames"] for i in range(len(source))])
  # Three epochs of batches never contain them.
  batches, _ = take(make_config(data_dir), 6, debug=True)
  assert not short & set(np.concatenate([b["record"] for b in batches]).tolist())


def test_all_too_short_is_a_clear_error(data_dir):
  with pytest.raises(ValueError, match=r"segment_frames=100.*tone\d+.*has 130"):
    pipeline.make_plan(make_config(data_dir, segment_frames=100))


def test_views_command_writes_npz_and_png(data_dir, tmp_path):
  config_file = tmp_path / "cfg.py"
  config_file.write_text(
      "import ml_collections\n"
      "def get_config(arg=None):\n"
      "  return ml_collections.ConfigDict(dict(seed=0, data_dir='', batch_size=4,\n"
      "      cqt=dict(sample_rate=22050, fmin=27.5, n_bins=99, bins_per_octave=12,\n"
      "               hop_length=512),\n"
      f"      data=dict(segment_frames={SEGMENT}, crop_bins=84, max_offset=12, num_workers=2,\n"
      "                prefetch_buffer_size=2)))\n")
  out, png = tmp_path / "views.npz", tmp_path / "views.png"
  done = subprocess.run(
      [sys.executable, "-m", "mt2_jax.cli", "views", f"--data={data_dir}",
       f"--config={config_file}", f"--out={out}", f"--png={png}", "--num=2"],
      cwd=ROOT, capture_output=True, text=True, timeout=180)
  assert done.returncode == 0, done.stderr[-3000:]
  with np.load(out) as z:
    assert {"x_a", "x_b", "x_a_shift", "shift"} <= set(z.files)
    for key in ("x_a", "x_b", "x_a_shift"):
      assert z[key].shape == (4, 84, SEGMENT) and z[key].dtype == np.float32
    assert z["shift"].shape == (4,)
    np.testing.assert_array_equal(peak_row(z["x_a"]) - peak_row(z["x_a_shift"]), z["shift"])
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_input_benchmark_quick(tmp_path):
  out, md = tmp_path / "bench.json", tmp_path / "RESULTS.md"
  md.write_text("# Benchmark results\n\n<!-- other:start -->\nkeep me\n<!-- other:end -->\n")
  done = subprocess.run(
      [sys.executable, "benchmarks/input_pipeline.py", "--quick", f"--out={out}",
       f"--results_md={md}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  report = json.loads(out.read_text())
  for key in ("benchmark", "machine", "cpu_model", "cores", "versions", "settings", "results"):
    assert key in report
  assert [r["workers"] for r in report["results"]] == [0, 1]
  for r in report["results"]:
    for key in ("views_per_s", "tracks_per_s", "batch_ms", "startup_s", "batches", "seconds",
                "dtype"):
      assert key in r
  text = md.read_text()
  assert "keep me" in text and "<!-- input_pipeline:start -->" in text
  assert text.count("<!-- input_pipeline:end -->") == 1


def test_results_update_section(tmp_path):
  sys.path.insert(0, str(ROOT))
  try:
    from benchmarks import results
  finally:
    sys.path.remove(str(ROOT))
  path = tmp_path / "R.md"
  results.update_section("a", "first", path)
  results.update_section("b", "other", path)
  results.update_section("a", "second", path)
  text = path.read_text()
  assert "second" in text and "first" not in text and "other" in text
  assert text.index("<!-- a:start -->") < text.index("<!-- b:start -->")
  assert "cores" in results.machine_description()


MULTIPROCESS_SCRIPT = """
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"
from absl import flags
flags.FLAGS.mark_as_parsed()
import jax, json, ml_collections, numpy as np
port, pid, data_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
from mt2_jax.data import pipeline
config = ml_collections.ConfigDict(dict(seed=0, data_dir=data_dir, batch_size=8,
    cqt=dict(sample_rate=22050, fmin=27.5, n_bins=99, bins_per_octave=12, hop_length=512),
    data=dict(segment_frames=48, crop_bins=84, max_offset=12, num_workers=0,
              prefetch_buffer_size=2)))
mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "fsdp"))
it = pipeline.make_iterator(config, mesh, debug=True)
batch = next(it)
x = batch["x_a"]
print(json.dumps({"shape": list(x.shape), "spec": str(x.sharding.spec),
                  "rows": sorted(s.index[0].start for s in x.addressable_shards),
                  "shard_shapes": [list(s.data.shape) for s in x.addressable_shards],
                  "plan_records": it.plan.records.tolist(),
                  "batch_records": [int(np.asarray(s.data)[0]) for s in sorted(
                      batch["record"].addressable_shards, key=lambda s: s.index[0].start)]}))
it.close()
"""


def test_two_processes_build_one_global_batch(data_dir, tmp_path):
  """Two JAX processes (4 CPU devices each): each reads its half, one global batch."""
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  script = tmp_path / "worker.py"
  script.write_text(MULTIPROCESS_SCRIPT)
  env = {k: v for k, v in __import__("os").environ.items() if k != "XLA_FLAGS"}
  procs = [subprocess.Popen([sys.executable, str(script), str(port), str(i), data_dir],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=180)
    assert p.returncode == 0, err[-3000:]
    outs.append(json.loads(out.strip().splitlines()[-1]))
  for i, o in enumerate(outs):
    assert o["shape"] == [8, 84, SEGMENT]
    assert o["rows"] == [4 * i + r for r in range(4)]
    assert all(shape == [1, 84, SEGMENT] for shape in o["shard_shapes"])
    assert set(o["batch_records"]) <= set(o["plan_records"])
  # Every process knows the whole stream; each built different rows of batch 0.
  assert outs[0]["plan_records"] == outs[1]["plan_records"]
  assert len(outs[0]["batch_records"]) == len(outs[1]["batch_records"]) == 4


def test_record_lengths_from_parts(data_dir, tmp_path):
  """When prepare lists num_frames per shard in _parts/, no record is read."""
  import shutil
  copy = tmp_path / "data"
  shutil.copytree(data_dir, copy, ignore=shutil.ignore_patterns("_cache"))
  source = dataset.open_split(copy, "train")
  truth = [source[i]["num_frames"] for i in range(len(source))]
  parts = sorted((copy / "_parts").glob("train-*.json"))
  start = 0
  for p in parts:
    part = json.loads(p.read_text())
    part["num_frames"] = [n + 1000 for n in truth[start:start + part["records"]]]
    start += part["records"]
    p.write_text(json.dumps(part))
  np.testing.assert_array_equal(pipeline.record_lengths(copy, "train"), np.add(truth, 1000))
  assert not (copy / "_cache").exists()
  # Without the lists, one pass over the raw records, cached for the next run.
  shutil.rmtree(copy / "_parts")
  np.testing.assert_array_equal(pipeline.record_lengths(copy, "train"), truth)
  assert (copy / "_cache" / "num_frames-train.npz").exists()
  np.testing.assert_array_equal(pipeline.record_lengths(copy, "train"), truth)


def _fold_profile(x, sharpness=10.0):
  """An exactly shift-equivariant head: [B, 84, T] -> softmax of the 12-bin chroma fold."""
  x = np.asarray(x, np.float32).mean(-1)  # [B, 84]
  chroma = x.reshape(x.shape[0], -1, 12).sum(1)
  chroma = (chroma - chroma.mean(1, keepdims=True)) / (chroma.std(1, keepdims=True) + 1e-6)
  e = np.exp(sharpness * chroma)
  return e / e.sum(1, keepdims=True)


def test_shift_convention_end_to_end_with_an_equivariant_head(data_dir):
  """The pipeline's views, an exactly equivariant profile and losses.cpsd agree on the sign.

  Collapse (the best input-independent head) scores 2.777; this head must beat
  it clearly, and score clearly worse with the shift negated.
  """
  from mt2_jax import losses
  batches, _ = take(make_config(data_dir, max_offset=12), 4)
  right, wrong = [], []
  for b in batches:
    y_a, y_b, y_s = (_fold_profile(b[k]) for k in ("x_a", "x_b", "x_a_shift"))
    right.append(float(losses.cpsd(y_a, y_b, y_s, b["shift"])[0]))
    wrong.append(float(losses.cpsd(y_a, y_b, y_s, -b["shift"])[0]))
  # Measured: 1.48 and 3.91 (leakage between the CQT bins of pure tones keeps
  # the profile from being a perfect one-hot).
  assert np.mean(right) < 2.0 < 2.777 < 3.2 < np.mean(wrong), (right, wrong)
  # With B at its own transposition the collapse value is 3.0; B's shift negated is wrong too.
  # (16 batches: 4 give 2.06, as A-B now also asks for a shift through the bins' leakage.)
  batches, _ = take(make_config(data_dir, max_offset=12, b_offset="own"), 16)
  right, wrong = [], []
  for b in batches:
    y_a, y_b, y_s = (_fold_profile(b[k]) for k in ("x_a", "x_b", "x_a_shift"))
    right.append(float(losses.cpsd(y_a, y_b, y_s, b["shift"], shift_b=b["shift_b"])[0]))
    wrong.append(float(losses.cpsd(y_a, y_b, y_s, b["shift"], shift_b=-b["shift_b"])[0]))
  # Measured: 1.39 and 3.49.
  assert np.mean(right) < 2.0 < 3.0 < 3.2 < np.mean(wrong), (right, wrong)
