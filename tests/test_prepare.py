"""The CQT front-end and `mt2 prepare`: values, bad input, resume, metadata checks."""

import csv
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from mt2_jax.data import dataset
from mt2_jax.data import prepare
from mt2_jax.data.cqt import CQTConfig, log_cqt


def sine(freq, seconds, sr=22050, amp=0.5):
  t = np.arange(int(seconds * sr)) / sr
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_cqt_of_a440_peaks_at_bin_48_and_equals_librosa():
  import librosa
  cfg = CQTConfig()
  x = sine(440.0, 3.0)
  spec = log_cqt(x, cfg)
  assert spec.shape == (99, cfg.num_frames(x.size))
  profile = spec[:, 10:-10].mean(axis=1)
  assert int(np.argmax(profile)) == 48  # A4 is 4 octaves above A0.
  direct = np.abs(librosa.cqt(x, sr=22050, hop_length=512, fmin=27.5, n_bins=99, bins_per_octave=12))
  db = 10 * np.log10(np.maximum(direct, 1e-10))
  db = np.maximum(db, db.max() - 80)
  np.testing.assert_allclose(spec, db / 80 + 1, atol=1e-5)
  assert spec.max() - spec.min() == pytest.approx(1.0, abs=1e-5)  # the 80 dB clamp


def test_fifteen_seconds_give_646_frames():
  assert CQTConfig().num_frames(15 * 22050) == 646


@pytest.mark.parametrize("cfg", [CQTConfig(), CQTConfig(fmin=55.0, n_bins=84)])
def test_min_samples_is_where_librosa_stops_warning_and_the_warm_up_is_that_long(cfg):
  """librosa warns "n_fft=... is too large for input signal" below min_samples,
  at which its lowest octave is zero padding; `mt2 prepare` printed it from the
  numba warm-up (8 hops long) before the warm-up was made min_samples long."""
  import warnings
  from mt2_jax.data import cqt
  n = cqt.min_samples(cfg)
  assert n == {55.0: 8192, 27.5: 16384}[cfg.fmin]  # The lowest filter's power-of-2 FFT.

  def warnings_of(fn):
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      fn()
    return [str(w.message) for w in caught]

  assert any("too large for input signal" in w
             for w in warnings_of(lambda: log_cqt(sine(440, (n - 512) / 22050), cfg)))
  assert not warnings_of(lambda: log_cqt(sine(440, n / 22050), cfg))
  assert not warnings_of(lambda: cqt.warm_numba_cache(cfg))


def test_excerpt_bounds_cover_track_in_equal_bounded_parts():
  b = prepare.excerpt_bounds(22050 * 130, 22050, 60.0)
  assert len(b) == 3 and b[0][0] == 0 and b[-1][1] == 22050 * 130
  assert all(s2 == e1 for (_, e1), (s2, _) in zip(b, b[1:]))
  assert max(e - s for s, e in b) <= 60 * 22050


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
  """Good files (two rates, stereo, a long one) and four bad ones."""
  d = tmp_path_factory.mktemp("audio")
  sf.write(d / "a440.wav", sine(440, 4.0, sr=44100), 44100)
  stereo = np.stack([sine(220, 3.0, 16000), sine(330, 3.0, 16000)], axis=1)
  (d / "sub").mkdir()
  sf.write(d / "sub" / "stereo.flac", stereo, 16000)
  sf.write(d / "long.wav", sine(110, 25.0), 22050)
  sf.write(d / "short.wav", sine(440, 0.2), 22050)
  sf.write(d / "silent.wav", np.zeros(22050 * 2, np.float32), 22050)
  nan = sine(440, 2.0)
  nan[100] = np.nan
  sf.write(d / "nan.wav", nan, 22050, subtype="FLOAT")
  (d / "corrupt.flac").write_bytes(b"fLaC" + bytes(range(256)) * 4)
  (d / "labels.csv").write_text(
      "file,key,tonic,split\na440.wav,A major,9,train\nlong.wav,A minor,9,test\n")
  (d / "sub" / "labels.csv").write_text("file,key,tonic,split\nstereo.flac,C major,0,train\n")
  return d


def run_prepare(audio_dir, out, **kw):
  kw.setdefault("num_workers", 1)
  return prepare.prepare(audio_dir, out, max_excerpt_seconds=10.0, files_per_shard=2,
                         progress=False, **kw)


def test_prepare_writes_good_files_and_reports_bad_ones(audio_dir, tmp_path):
  out = tmp_path / "data"
  s = run_prepare(audio_dir, out)
  assert s.complete
  with open(out / "rejected.csv") as f:
    rejected = {r["file"]: r["reason"] for r in csv.DictReader(f)}
  assert set(rejected) == {"short.wav", "silent.wav", "nan.wav", "corrupt.flac"}
  assert "too short" in rejected["short.wav"] and "silent" in rejected["silent.wav"]
  assert "non-finite" in rejected["nan.wav"] and "unreadable" in rejected["corrupt.flac"]

  # Read back with plain TFDS, without this package's reader.
  import tensorflow_datasets as tfds
  builder = tfds.builder_from_directory(str(out))
  train = builder.as_data_source(split="train")
  test = builder.as_data_source(split="test")
  assert sorted(r["source"].decode() for r in train) == ["a440.wav", "sub/stereo.flac"]
  # 25 s with 10 s excerpts -> 3 equal excerpts of one track, split by labels.csv.
  long = sorted((r for r in test), key=lambda r: r["start"])
  assert len(long) == 3 and {r["track_id"].decode() for r in long} == {"long"}
  assert long[0]["key"].decode() == "A minor" and long[0]["tonic"] == 9
  cfg = CQTConfig()
  for r in list(train) + long:
    assert r["cqt"].dtype == np.float16 and r["cqt"].shape == (99, r["num_frames"])
  # Values read back equal a direct computation on the same audio.
  by_src = {r["source"].decode(): r for r in train}
  from mt2_jax.data.audio import load_audio
  direct = log_cqt(load_audio(audio_dir / "a440.wav"), cfg).astype(np.float16)
  np.testing.assert_array_equal(by_src["a440.wav"]["cqt"], direct)
  assert by_src["sub/stereo.flac"]["key"].decode() == "C major"
  assert builder.info.metadata["cqt"] == cfg.to_dict()


def test_rerun_skips_done_shards_and_workers_give_same_bytes(audio_dir, tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  s1 = run_prepare(audio_dir, a)
  s2 = run_prepare(audio_dir, a)
  assert s1.files == 7 and s2.files == 0 and s2.skipped_shards == 4
  run_prepare(audio_dir, b, num_workers=2)
  shards = sorted(p.name for p in a.glob("mt2_cqt-*"))
  assert shards == sorted(p.name for p in b.glob("mt2_cqt-*"))
  for name in shards:
    assert (a / name).read_bytes() == (b / name).read_bytes()


def test_disjoint_parts_build_one_dataset(audio_dir, tmp_path):
  out = tmp_path / "data"
  s0 = run_prepare(audio_dir, out, shard_index=0, num_shards=2)
  assert not s0.complete and not (out / "dataset_info.json").exists()
  with pytest.raises(FileNotFoundError, match="incomplete"):
    dataset.open_builder(out)
  s1 = run_prepare(audio_dir, out, shard_index=1, num_shards=2)
  assert s1.complete and s0.files + s1.files == 7 and s0.files and s1.files
  assert len(dataset.open_split(out, "train")) == 2


def test_interrupted_run_keeps_finished_shards(audio_dir, tmp_path, monkeypatch):
  out = tmp_path / "data"
  calls = []
  real = prepare.process_file

  def flaky(job):
    calls.append(job[1])
    if len(calls) == 5:
      raise KeyboardInterrupt
    return real(job)

  monkeypatch.setattr(prepare, "process_file", flaky)
  with pytest.raises(KeyboardInterrupt):
    run_prepare(audio_dir, out)
  done = sorted(p.name for p in (out / "_parts").glob("*-*.json"))
  assert len(done) == 2  # shards of 2 files: the first two finished, the third was in flight.
  monkeypatch.setattr(prepare, "process_file", real)
  s = run_prepare(audio_dir, out)
  assert s.complete and s.skipped_shards == 2 and s.files == 4


def test_changed_inputs_into_same_folder_is_an_error(audio_dir, tmp_path):
  out = tmp_path / "data"
  run_prepare(audio_dir, out)
  with pytest.raises(ValueError, match="other files or settings"):
    run_prepare(audio_dir, out, cqt=CQTConfig(hop_length=256))


def test_mismatched_cqt_config_is_a_clear_error(audio_dir, tmp_path):
  out = tmp_path / "data"
  run_prepare(audio_dir, out)
  assert len(dataset.open_split(out, "train", CQTConfig())) == 2
  with pytest.raises(dataset.CQTMismatchError, match=r"hop_length: dataset has 512, config has 256"):
    dataset.open_split(out, "train", CQTConfig(hop_length=256))


def test_cli_exits_nonzero_when_nothing_is_usable(tmp_path):
  d = tmp_path / "bad"
  d.mkdir()
  sf.write(d / "silent.wav", np.zeros(22050 * 2, np.float32), 22050)
  mt2 = pathlib.Path(sys.executable).parent / "mt2"
  r = subprocess.run([str(mt2), "prepare", "--audio", str(d), "--out", str(tmp_path / "o")],
                     capture_output=True, text=True)
  assert r.returncode == 1 and "no usable audio" in r.stderr
  assert "silent" in (tmp_path / "o" / "rejected.csv").read_text()


def test_labels_csv_in_a_parent_folder_is_used(tmp_path):
  (tmp_path / "songs").mkdir()
  sf.write(tmp_path / "songs" / "a.wav", sine(440, 2.0), 22050)
  (tmp_path / "labels.csv").write_text("file,key\nsongs/a.wav,A major\nother/b.wav,C major\n")
  rows, columns = prepare.read_labels(tmp_path / "songs")
  assert rows == {"a.wav": {"key": "A major"}} and columns == ["key"]


def test_prepare_benchmark_writes_its_fields(tmp_path):
  out = tmp_path / "prepare.json"
  root = pathlib.Path(__file__).resolve().parent.parent
  r = subprocess.run([sys.executable, str(root / "benchmarks" / "prepare.py"), "--seconds", "30",
                      "--workers", "1", "--no_results_md", "--out", str(out)],
                     capture_output=True, text=True, cwd=root)
  assert r.returncode == 0, r.stderr[-2000:]
  (row,) = json.loads(out.read_text())
  assert row["workers"] == 1 and row["files"] == 1 and row["audio_seconds"] == pytest.approx(30, abs=1)
  assert row["audio_s_per_cpu_s"] > 0 and row["cpu_seconds"] > 0


def test_workers_on_a_fresh_numba_cache_leave_librosa_usable(tmp_path):
  """Two spawned workers loading librosa's gufuncs for the first time at once
  wrote mismatched numba cache files (numba#10128), after which those gufuncs
  segfaulted in every later process (a third to half of the runs here). A
  private NUMBA_CACHE_DIR stands in for a fresh install."""
  d = tmp_path / "audio"
  d.mkdir()
  for i in range(4):
    sf.write(d / f"s{i}.wav", sine(220 * (i + 1), 1.0), 22050)
  env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
  mt2 = pathlib.Path(sys.executable).parent / "mt2"
  r = subprocess.run([str(mt2), "prepare", "--audio", str(d), "--out", str(tmp_path / "o"),
                      "--num_workers", "2"], capture_output=True, text=True, env=env)
  assert r.returncode == 0, r.stderr[-2000:]
  # A quiet console: the bar and the summary, no absl INFO lines, no librosa
  # warning from the warm-up that --num_workers > 1 runs.
  assert "Dataset complete: 4 records" in r.stdout
  assert not re.search(r"^I\d{4} ", r.stderr, re.M) and "Warning" not in r.stderr, r.stderr
  # chroma_cqt estimates the tuning: librosa's parabolic-interpolation gufunc.
  use = ("import librosa, numpy as np; "
         "librosa.feature.chroma_cqt(y=np.sin(np.arange(22050) / 7).astype('float32'), sr=22050)")
  r = subprocess.run([sys.executable, "-c", use], capture_output=True, text=True, env=env)
  assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
