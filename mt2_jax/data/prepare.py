"""An audio folder -> pre-sharded CQT dataset: `prepare(audio_dir, out_dir, ...)`.

`mt2 prepare` (mt2_jax/cli/prepare.py) is its command line:

  mt2 prepare --audio corpus/ --out data/ [--num_workers 4]
  # many machines, each a disjoint part (a SLURM array, the hosts of a pod):
  mt2 prepare --audio /audio --out /data --shard_index $I --num_shards $N

Files are sorted, grouped `files_per_shard` at a time into shards of their
split (the `split` column of labels.csv, else `train`), and shard g is built by
the machine with `g % num_shards == shard_index`. Each shard is written to a
temporary file, renamed into place, then recorded in `_parts/`; a re-run skips
recorded shards, so an interrupted run loses at most the shards in flight.
Whoever records the last shard writes the TFDS metadata and `rejected.csv`.
"""

import csv
import dataclasses
import functools
import io
import json
import multiprocessing
import os
import pathlib
import time
from typing import Any

import numpy as np
from absl import logging

from mt2_jax import storage
from mt2_jax.data import audio
from mt2_jax.data import dataset
from mt2_jax.data.cqt import CQTConfig, log_cqt, warm_numba_cache


@dataclasses.dataclass
class Summary:
  """What a `prepare` run did (this machine's part, plus the dataset if complete)."""
  files: int = 0              # audio files this run processed
  skipped_shards: int = 0     # shards already done by an earlier run
  records: int = 0            # records written by this run
  rejected: list = dataclasses.field(default_factory=list)  # (file, reason)
  audio_seconds: float = 0.0
  wall_seconds: float = 0.0
  complete: bool = False      # all shards of all machines done (metadata written if any record)
  total_records: int = 0      # in the whole dataset, when complete


def read_labels(audio_dir, files=None) -> tuple[dict[str, dict[str, str]], list[str]]:
  """Every labels.csv under audio_dir (or in a parent) -> ({path relative to audio_dir: row}, columns).

  The `file` column of each labels.csv is relative to the folder it sits in,
  so `mt2 prepare --audio corpus/chorales` still finds `corpus/labels.csv`.
  `files`: the files under audio_dir when the caller has listed them already.
  """
  audio_dir = storage.path(audio_dir)
  if files is None:
    files, _ = storage.list_files(audio_dir, "audio folder")
  parents = [p / "labels.csv" for p in list(audio_dir.parents)[:2]]
  rows, columns = {}, []
  for csv_path in [p for p in parents if p.is_file()] + [f for f in files if f.name == "labels.csv"]:
    reader = storage.read_csv(csv_path)
    if "file" not in (reader.fieldnames or []):
      logging.warning("%s has no `file` column; ignored.", csv_path)
      continue
    for c in reader.fieldnames:
      if c != "file" and c not in columns:
        columns.append(c)
    for row in reader:
      try:
        rel = storage.relative(storage.join(csv_path.parent, row["file"]), audio_dir)
      except ValueError:
        continue  # A file outside audio_dir.
      rows[rel] = {k: v for k, v in row.items() if k != "file"}
  return rows, columns


def excerpt_bounds(num_samples: int, sample_rate: int, max_seconds: float) -> list[tuple[int, int]]:
  """Splits [0, num_samples) into the fewest equal excerpts of at most max_seconds."""
  max_len = int(max_seconds * sample_rate)
  n = max(1, -(-num_samples // max_len))
  edges = np.linspace(0, num_samples, n + 1).astype(int)
  return list(zip(edges[:-1], edges[1:]))


@functools.lru_cache(maxsize=4)
def _features(n_bins: int, label_types_json: str):
  return dataset.features(n_bins, json.loads(label_types_json))


def process_file(job: tuple) -> tuple[str, list[bytes], str | None, float, list[int]]:
  """One audio file -> (rel path, serialized records, rejection reason, seconds, frames per record)."""
  path, rel, labels, label_types_json, cqt_dict, max_excerpt, min_seconds = job
  cqt = CQTConfig(**cqt_dict)
  try:
    x = audio.load_audio(path, cqt.sample_rate, min_seconds)
  except audio.AudioError as e:
    return rel, [], str(e), 0.0, []
  except Exception as e:  # Anything unexpected in one file must not stop the run.
    return rel, [], f"error: {type(e).__name__}: {e}", 0.0, []
  feats = _features(cqt.n_bins, label_types_json)
  label_values = dataset.encode_labels(labels, json.loads(label_types_json))
  track_id = str(pathlib.PurePosixPath(rel).with_suffix(""))
  records, frames = [], []
  for start, stop in excerpt_bounds(x.size, cqt.sample_rate, max_excerpt):
    spec = log_cqt(x[start:stop], cqt).astype(np.float16)
    records.append(dataset.serialize(feats, {
        "cqt": spec, "track_id": track_id, "source": rel,
        "start": start / cqt.sample_rate, "duration": (stop - start) / cqt.sample_rate,
        "num_frames": spec.shape[1], **label_values}))
    frames.append(spec.shape[1])
  return rel, records, None, x.size / cqt.sample_rate, frames


def _write_shard(path, records: list[bytes], local_dir: pathlib.Path) -> None:
  """Writes an ArrayRecord shard atomically: into `local_dir` (ArrayRecord
  writes local files only) under a temporary name, then moved into place."""
  from array_record.python import array_record_module as arm
  tmp = local_dir / f".{path.name}.{os.getpid()}.tmp"
  writer = arm.ArrayRecordWriter(os.fspath(tmp), "group_size:1")
  for r in records:
    writer.write(r)
  writer.close()
  storage.put_file(tmp, path)


def _write_json(path, obj: Any) -> None:
  storage.write_text(path, json.dumps(obj, indent=1))


def plan_shards(files: list[str], labels: dict, files_per_shard: int) -> dict[str, list[list[str]]]:
  """{split: [[files of shard 0], ...]}, in sorted order; splits from labels.csv."""
  by_split: dict[str, list[str]] = {}
  for rel in files:
    split = labels.get(rel, {}).get("split", "") or "train"
    if split not in dataset.SPLITS:
      split = "train"
    by_split.setdefault(split, []).append(rel)
  return {s: [fs[i:i + files_per_shard] for i in range(0, len(fs), files_per_shard)]
          for s, fs in sorted(by_split.items())}


def prepare(audio_dir, out_dir, cqt: CQTConfig = CQTConfig(), num_workers: int = 1,
            shard_index: int = 0, num_shards: int = 1, files_per_shard: int = 32,
            max_excerpt_seconds: float = 60.0, min_seconds: float = 1.0,
            progress: bool = True) -> Summary:
  """Builds (this machine's part of) the CQT dataset; see the module docstring."""
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"--shard_index must be in [0, {num_shards}), got {shard_index}")
  if max_excerpt_seconds < 2 * min_seconds or files_per_shard < 1:
    raise ValueError("need files_per_shard >= 1 and max_excerpt_seconds >= 2 * min_seconds")
  audio_dir, out_dir = storage.path(audio_dir), storage.path(out_dir)
  listing, unreadable = storage.list_files(audio_dir, "audio folder")
  for entry, reason in unreadable:
    logging.warning("rejected %s: %s", entry, reason)
  files = [storage.relative(p, audio_dir) for p in listing if audio.is_audio(p)]
  if not files:
    raise FileNotFoundError(f"no audio files ({', '.join(audio.AUDIO_EXTENSIONS)}) under {audio_dir}")
  labels, columns = read_labels(audio_dir, listing)
  label_types = dataset.infer_label_types([labels.get(f, {}) for f in files], columns)
  shards = plan_shards(files, labels, files_per_shard)

  # The plan ties every part to one set of inputs and settings: parts made by
  # another plan would silently mix, so that is an error.
  parts = storage.output_dir(out_dir, "--out") / "_parts"
  parts.mkdir(parents=True, exist_ok=True)
  unreadable = [(storage.relative(e, audio_dir), r) for e, r in unreadable]
  summary = Summary(rejected=list(unreadable))
  plan = {"cqt": cqt.to_dict(), "files": files, "label_types": label_types,
          "files_per_shard": files_per_shard, "max_excerpt_seconds": max_excerpt_seconds,
          "min_seconds": min_seconds}
  plan_path = parts / "plan.json"
  if plan_path.exists():
    if json.loads(plan_path.read_text()) != plan:
      raise ValueError(
          f"{out_dir} holds part of a dataset made from other files or settings "
          f"(see {plan_path}). Use a new --out folder, or delete this one to start over.")
  else:
    _write_json(plan_path, plan)
  # Entries that could not be read go to rejected.csv, whoever finalises.
  _write_json(parts / "unreadable.json", unreadable)

  jobs_by_shard = []  # (split, index, count, files) for this machine's pending shards
  g = 0
  for split, groups in shards.items():
    for i, group in enumerate(groups):
      mine = g % num_shards == shard_index
      g += 1
      if not mine:
        continue
      if (parts / f"{split}-{i:05d}.json").exists():
        summary.skipped_shards += 1
        continue
      jobs_by_shard.append((split, i, len(groups), group))

  t0 = time.time()
  label_types_json = json.dumps(label_types)
  jobs = [(os.fspath(audio_dir / rel), rel, labels.get(rel, {}), label_types_json, cqt.to_dict(),
           max_excerpt_seconds, min_seconds)
          for _, _, _, group in jobs_by_shard for rel in group]
  if jobs:
    from tqdm import tqdm
    bar = tqdm(total=len(jobs), unit="file", desc="prepare", disable=not progress,
               dynamic_ncols=True)
    pool = None
    local = storage.local_dir(out_dir)  # Where shards are written before their move.
    if num_workers > 1:
      # spawn: librosa/numba/soxr threads do not survive fork reliably.
      warm_numba_cache(cqt)
      pool = multiprocessing.get_context("spawn").Pool(num_workers)
      results = pool.imap(process_file, jobs, chunksize=1)
    else:
      results = map(process_file, jobs)
    try:
      for split, i, count, group in jobs_by_shard:
        records, rejected, seconds, num_frames = [], [], 0.0, []
        for _ in group:
          rel, recs, reason, secs, frames = next(results)
          records += recs
          num_frames += frames
          seconds += secs
          if reason:
            rejected.append((rel, reason))
            logging.warning("rejected %s: %s", rel, reason)
          bar.update(1)
          summary.audio_seconds += secs
          bar.set_postfix(audio_h=f"{summary.audio_seconds / 3600:.2f}", audio_h_per_s=(
              f"{summary.audio_seconds / 3600 / max(time.time() - t0, 1e-9):.4f}"))
        _write_shard(dataset.shard_path(out_dir, split, i, count), records, local)
        _write_json(parts / f"{split}-{i:05d}.json", {
            "records": len(records), "num_bytes": sum(map(len, records)),
            "rejected": rejected, "audio_seconds": seconds, "files": len(group),
            "num_frames": num_frames})  # Lets the pipeline skip a scan of every record.
        summary.files += len(group)
        summary.records += len(records)
        summary.rejected += rejected
    finally:
      bar.close()
      if pool is not None:
        pool.terminate()
      storage.drop_local_dir(local, out_dir)
  summary.wall_seconds = time.time() - t0
  _finalize_if_complete(out_dir, shards, label_types, cqt, summary)
  return summary


def _finalize_if_complete(out_dir, shards, label_types, cqt, summary) -> None:
  """Writes the TFDS metadata and rejected.csv once every shard is recorded."""
  parts = out_dir / "_parts"
  done = {}
  for split, groups in shards.items():
    for i in range(len(groups)):
      p = parts / f"{split}-{i:05d}.json"
      if not p.exists():
        return
      done[(split, i)] = json.loads(p.read_text())
  lengths = {s: [done[(s, i)]["records"] for i in range(len(g))] for s, g in shards.items()}
  num_bytes = {s: sum(done[(s, i)]["num_bytes"] for i in range(len(g))) for s, g in shards.items()}
  summary.total_records = sum(map(sum, lengths.values()))
  summary.complete = True
  unreadable = (json.loads((parts / "unreadable.json").read_text())
                if (parts / "unreadable.json").exists() else [])
  rejected = [tuple(r) for r in unreadable] + [
      tuple(r) for (s, i) in sorted(done) for r in done[(s, i)]["rejected"]]
  table = io.StringIO()
  w = csv.writer(table)
  w.writerow(["file", "reason"])
  w.writerows(rejected)
  storage.write_text(out_dir / "rejected.csv", table.getvalue())
  if summary.total_records == 0:
    return
  dataset.write_metadata(
      out_dir, dataset.features(cqt.n_bins, label_types), lengths, num_bytes, cqt,
      extra={"label_types": label_types,
             "audio_hours": sum(d["audio_seconds"] for d in done.values()) / 3600})

