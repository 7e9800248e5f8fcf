"""Which records of a prepared split are usable: their lengths, read once and cached.

Records shorter than 2 * segment_frames cannot give two non-overlapping
segments. `num_frames` comes from prepare's `_parts/` lists when present, else
from one pass over the raw records, cached in `DATA/_cache/`.
"""

import hashlib
import json

from absl import logging
from etils import epath
import numpy as np

from mt2_jax import storage
from mt2_jax.data import dataset

_CACHE_DIR = "_cache"

def _shard_files(data_dir, split: str) -> list[epath.Path]:
  return sorted(storage.path(data_dir).glob(f"{dataset.DATASET_NAME}-{split}.array_record-*"))


def _raw_num_frames(raw: bytes) -> int:
  """`num_frames` of a serialized record, without decoding its spectrum."""
  from tensorflow_datasets.proto import tf_example_pb2
  feature = tf_example_pb2.Example.FromString(raw).features.feature["num_frames"]
  return int(feature.int64_list.value[0])


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


def record_lengths(data_dir, split: str, source=None, chunk: int = 256) -> np.ndarray:
  """[num_records] int64 `num_frames` of every record of a split, cached.

  Free when each `_parts/SPLIT-IIIII.json` lists its records' `num_frames`.
  Otherwise it costs one pass over the split's bytes (each record is read and
  its proto parsed, the spectrum is not decoded: about the I/O of one epoch),
  cached in DATA/_cache/num_frames-SPLIT.npz, keyed by the shards' names and
  sizes, so later runs and every host after the first read a small file; an
  unwritable DATA only loses the cache.
  """
  source = dataset.open_split(data_dir, split) if source is None else source
  from_parts = _lengths_from_parts(data_dir, split, len(source))
  if from_parts is not None:
    return from_parts
  files = _shard_files(data_dir, split)
  key = hashlib.sha256(json.dumps(
      [(p.name, p.stat().length) for p in files] + [len(source)]).encode()).hexdigest()[:16]
  cache = storage.path(data_dir) / _CACHE_DIR / f"num_frames-{split}.npz"
  try:
    z = storage.load_npz(cache)
    if str(z["key"]) == key and len(z["num_frames"]) == len(source):
      return z["num_frames"].astype(np.int64)
  except (OSError, KeyError, ValueError):
    pass
  n = len(source)
  lengths = np.empty(n, np.int64)
  raw_source = getattr(source, "data_source", None)
  for lo in range(0, n, chunk):
    keys = list(range(lo, min(n, lo + chunk)))
    try:
      lengths[lo:lo + len(keys)] = [_raw_num_frames(r) for r in raw_source.__getitems__(keys)]
    except Exception:  # pylint: disable=broad-except
      # Another TFDS layout: decode the records (slower, same answer).
      lengths[lo:lo + len(keys)] = [int(source[k]["num_frames"]) for k in keys]
  try:
    storage.save_npz(cache, key=np.array(key), num_frames=lengths)
  except OSError as e:
    logging.info("Could not cache record lengths in %s (%s); they are re-read next time.",
                 cache, e)
  return lengths


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
