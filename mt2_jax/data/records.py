"""Which records of a prepared split are usable (their lengths), and their groups.

Records shorter than 2 * segment_frames cannot give two non-overlapping
segments. `num_frames` comes from prepare's `_parts/` lists when present, else
from one pass over the raw records, cached in `DATA/_cache/`.
"""

import hashlib
import json
import re

from absl import logging
from etils import epath
import numpy as np

from mt2_jax import storage
from mt2_jax.data import dataset

_CACHE_DIR = "_cache"

def _shard_files(data_dir, split: str) -> list[epath.Path]:
  return sorted(storage.path(data_dir).glob(f"{dataset.DATASET_NAME}-{split}.array_record-*"))


def _raw_feature(raw: bytes, name: str) -> int | bytes:
  """Feature `name` of a serialized record, without decoding its spectrum."""
  from tensorflow_datasets.proto import tf_example_pb2
  feature = tf_example_pb2.Example.FromString(raw).features.feature[name]
  if feature.HasField("int64_list"):
    return int(feature.int64_list.value[0])
  return feature.bytes_list.value[0]


def _lengths_from_parts(data_dir, split: str, n: int) -> np.ndarray | None:
  """`num_frames` lists in the shards' _parts/SPLIT-IIIII.json, if prepare wrote them."""
  lengths = []
  for path in sorted((storage.path(data_dir) / "_parts").glob(f"{split}-*.json")):
    try:
      part = json.loads(path.read_text())
    except (OSError, ValueError):
      return None
    if len(part.get("num_frames", ())) != part.get("records", -1):
      return None
    lengths += part["num_frames"]
  return np.asarray(lengths, np.int64) if len(lengths) == n else None


def _cached_feature(data_dir, split: str, source, name: str, chunk: int = 256) -> np.ndarray:
  """[num_records] feature `name` of every record of a split, read once and cached.

  One pass over the split's bytes (each record is read and its proto parsed,
  the spectrum is not decoded: about the I/O of one epoch), cached in
  DATA/_cache/NAME-SPLIT.npz, keyed by the shards' names and sizes, so later
  runs and every host after the first read a small file; an unwritable DATA
  only loses the cache.
  """
  files = _shard_files(data_dir, split)
  key = hashlib.sha256(json.dumps(
      [(p.name, p.stat().length) for p in files] + [len(source)]).encode()).hexdigest()[:16]
  cache = storage.path(data_dir) / _CACHE_DIR / f"{name}-{split}.npz"
  try:
    z = storage.load_npz(cache)
    if str(z["key"]) == key and len(z[name]) == len(source):
      return z[name]
  except (OSError, KeyError, ValueError):
    pass
  n = len(source)
  values = []
  raw_source = getattr(source, "data_source", None)
  for lo in range(0, n, chunk):
    keys = list(range(lo, min(n, lo + chunk)))
    try:
      values += [_raw_feature(r, name) for r in raw_source.__getitems__(keys)]
    except Exception:  # pylint: disable=broad-except
      # Another TFDS layout: decode the records (slower, same answer).
      values += [source[k][name] for k in keys]
  values = np.asarray([v.decode() if isinstance(v, bytes) else v for v in values])
  try:
    storage.save_npz(cache, key=np.array(key), **{name: values})
  except OSError as e:
    logging.info("Could not cache record %s in %s (%s); they are re-read next time.",
                 name, cache, e)
  return values


def record_lengths(data_dir, split: str, source=None) -> np.ndarray:
  """[num_records] int64 `num_frames` of every record of a split.

  Free when each `_parts/SPLIT-IIIII.json` lists its records' `num_frames`;
  otherwise read once and cached (`_cached_feature`).
  """
  source = dataset.open_split(data_dir, split) if source is None else source
  from_parts = _lengths_from_parts(data_dir, split, len(source))
  if from_parts is not None:
    return from_parts
  return _cached_feature(data_dir, split, source, "num_frames").astype(np.int64)


def record_groups(data_dir, split: str, source, records: np.ndarray, pattern: str) -> np.ndarray:
  """[len(records)] int group of each record: its track id's match of `pattern`.

  The group is the pattern's first capture group if it has one, else the whole
  match (`re.search`); e.g. '^[^_]+' on the demo corpus's
  'bwv101.7_v0_clarinet_-4st_91bpm' is the piece, bwv101.7. Track ids are read
  once and cached (`_cached_feature`). Raises ValueError naming a track id the
  pattern does not match.
  """
  track_ids = _cached_feature(data_dir, split, source, "track_id")
  regex = re.compile(pattern)
  keys = []
  for r in records:
    m = regex.search(str(track_ids[r]))
    if m is None:
      raise ValueError(f"data.group_pattern {pattern!r} does not match the track id "
                       f"{str(track_ids[r])!r} (record {int(r)} of split {split!r}); every "
                       f"track needs a group, or set data.group_pattern='' (off).")
    keys.append(m.group(1) if regex.groups else m.group(0))
  _, groups = np.unique(np.asarray(keys), return_inverse=True)
  return groups.astype(np.int64)


def usable_records(lengths: np.ndarray, segment_frames: int, track_ids=None,
                   show: int = 10) -> np.ndarray:
  """Indices of records with at least 2 * segment_frames frames.

  Shorter ones are logged (count and the first `show` track ids; `track_ids`
  maps an index to its id) and left out. Raises ValueError when none is left.
  """
  need = 2 * segment_frames
  lengths = np.asarray(lengths)
  if lengths.size == 0:
    raise ValueError("The dataset split has no records.")
  keep = np.flatnonzero(lengths >= need)
  short = np.flatnonzero(lengths < need)
  name = (lambda i: track_ids(int(i))) if track_ids is not None else (lambda i: f"record {i}")
  if keep.size == 0:
    longest = int(np.argmax(lengths))
    raise ValueError(
        f"No record is long enough for two non-overlapping segments of "
        f"data.segment_frames={segment_frames} frames (needs {need} frames); the longest, "
        f"{name(longest)}, has {int(lengths[longest])}. Lower data.segment_frames or "
        f"prepare longer audio.")
  if short.size:
    listed = ", ".join(f"{name(i)} ({int(lengths[i])} frames)" for i in short[:show])
    logging.warning(
        "Leaving out %d of %d records shorter than 2 * segment_frames = %d frames: %s%s",
        short.size, lengths.size, need, listed, ", ..." if short.size > show else "")
  return keep
