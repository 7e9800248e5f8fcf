"""The Grain input pipeline: per track, the views of both pretext tasks (docs/design.md §1.2).

  it = pipeline.make_iterator(config, mesh)      # checkpointable, yields global batches
  batch = next(it)                               # {'x_a', 'x_b', 'x_a_shift', 'shift'}
  state = it.get_state(); it.set_state(state)    # or Orbax: grain.checkpoint.CheckpointSave(it)

Per track and per visit, two non-overlapping random crops of `segment_frames`
frames (segments A and B) and a transposition by cropping frequency bins:
`o ~ U{1..max_offset}`, `t = (o + U{1..11}) mod 12`, `d = t - o` (never 0, in
[-11, 10]: every non-zero pitch class once mod 12); x_a = bins [o, o+84) of
segment A, x_b = the same bins of B, x_a_shift = bins [t, t+84) of A. A larger
offset shows the content lower, so a pitch at row r of x_a sits at row r - d
of x_a_shift, and `argmax(x_a) - argmax(x_a_shift) == shift` for a pure tone.

Determinism. Element p of the (global) stream is record `records[perm_e[i]]`
with `(e, i) = divmod(p, len(records))` and `perm_e` a permutation drawn from
(seed, e); its crops and offsets are drawn from a numpy Generator seeded with
(seed, e, record). Nothing depends on worker count, timing, or the number of
processes, so 0 and 8 workers, or 1 and 2 hosts, give the same global
batches, and the iterator's state is a single number: how many elements of
the stream the job has consumed.

Sharding. Global batch b is stream elements [b*B, (b+1)*B); process i of n
builds (and reads the records of) only its rows [i*B/n, (i+1)*B/n), and
`make_global_batch` assembles the global `jax.Array`s over the mesh. Only
indices are global: each host reads 1/n of the data per step.

Parallelism. The stream is a Grain `MapDataset` of whole host-local batches;
`mp_prefetch` hands batch b to worker `b % num_workers`, so each worker
builds entire batches (no per-track IPC) and returns them through shared
memory. With 0 workers a background thread builds the next batches.

Records shorter than 2 * segment_frames cannot give two non-overlapping
segments: they are found when the pipeline is built (`num_frames` from
`_parts/` if listed there, else read from the raw records once and cached in
`DATA/_cache/`), logged and left out. None long enough is a ValueError.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import sys
from typing import Any, Mapping

from absl import logging
import grain
import jax
import ml_collections
import numpy as np

from mt2_jax import sharding
from mt2_jax.data import dataset
from mt2_jax.data.cqt import CQTConfig

# Offsets and shifts live on the 12 pitch classes (docs/design.md §1.2).
PITCH_CLASSES = 12
VIEW_KEYS = ("x_a", "x_b", "x_a_shift")
# Extra int32 keys of debug batches, plus `track_id` (bytes).
DEBUG_KEYS = ("record", "epoch", "start_a", "start_b", "offset")
STATE_VERSION = 2  # 2: position counts global elements
# Separate random streams per purpose: a record's views never share numbers
# with an epoch's shuffle.
_VIEWS_STREAM, _SHUFFLE_STREAM = 1, 2
_CACHE_DIR = "_cache"


@dataclasses.dataclass(frozen=True)
class ViewSpec:
  """How one track becomes views; `config.data` holds these keys."""
  segment_frames: int = 646
  crop_bins: int = 84
  max_offset: int = 12
  # Of x_a, x_b, x_a_shift: 'float32', 'bfloat16', or 'float16' (the stored
  # precision: lossless, half the bytes, and no float16 -> float32 conversion,
  # which is most of the CPU cost per view; cast on the accelerator instead).
  dtype: str = "float32"

  @classmethod
  def from_config(cls, data: Mapping[str, Any]) -> "ViewSpec":
    return cls(segment_frames=int(data["segment_frames"]), crop_bins=int(data["crop_bins"]),
               max_offset=int(data["max_offset"]), dtype=str(data.get("dtype", "float32")))

  @property
  def np_dtype(self) -> np.dtype:
    dtypes = {"float32": np.float32, "bfloat16": jax.numpy.bfloat16, "float16": np.float16}
    if self.dtype not in dtypes:
      raise ValueError(f"data.dtype must be one of {sorted(dtypes)}, got {self.dtype!r}")
    return np.dtype(dtypes[self.dtype])

  def check(self, n_bins: int) -> None:
    """Raises ValueError unless every offset pair fits in `n_bins` rows."""
    if self.segment_frames < 1 or self.crop_bins < 1 or self.max_offset < 1:
      raise ValueError(f"segment_frames, crop_bins and max_offset must be >= 1: {self}")
    # o reaches max_offset, t reaches 11.
    highest = max(self.max_offset, PITCH_CLASSES - 1)
    if self.crop_bins + highest > n_bins:
      raise ValueError(
          f"data.crop_bins ({self.crop_bins}) + the highest bin offset ({highest}) exceeds the "
          f"{n_bins} CQT bins of the dataset.")
    self.np_dtype  # pylint: disable=pointless-statement


def crop_starts(rng: np.random.Generator, num_frames: int, segment_frames: int) -> tuple[int, int]:
  """Starts (a, b) of two non-overlapping crops, uniform over all such pairs.

  With slack = num_frames - 2 * segment_frames >= 0, the earlier crop starts at
  x1 and the later at x2 + segment_frames for 0 <= x1 <= x2 <= slack; two
  distinct draws from {0..slack+1} (sorted, the larger minus one) are such a
  pair, uniformly. Which of the two is A is a coin flip.
  """
  slack = num_frames - 2 * segment_frames
  if slack < 0:
    raise ValueError(f"{num_frames} frames cannot hold two segments of {segment_frames}")
  u = int(rng.integers(0, slack + 2))
  v = int(rng.integers(0, slack + 1))
  v += v >= u
  lo, hi = min(u, v), max(u, v)
  first, second = lo, hi - 1 + segment_frames
  return (first, second) if rng.random() < 0.5 else (second, first)


def draw_offsets(rng: np.random.Generator, max_offset: int) -> tuple[int, int]:
  """(o, t): o ~ U{1..max_offset}, t = (o + U{1..11}) mod 12; t - o is never 0."""
  o = int(rng.integers(1, max_offset + 1))
  t = (o + int(rng.integers(1, PITCH_CLASSES))) % PITCH_CLASSES
  return o, t


def draw(rng: np.random.Generator, num_frames: int, spec: "ViewSpec") -> dict[str, int]:
  """One record's random choices: crop starts, then offsets (in this order)."""
  start_a, start_b = crop_starts(rng, num_frames, spec.segment_frames)
  o, t = draw_offsets(rng, spec.max_offset)
  return {"start_a": start_a, "start_b": start_b, "offset": o, "shift": t - o}


def crops(cqt: np.ndarray, d: Mapping[str, int], spec: "ViewSpec") -> dict[str, np.ndarray]:
  """x_a, x_b, x_a_shift as views into cqt [n_bins, frames] (no copy)."""
  s, c = spec.segment_frames, spec.crop_bins
  o, t, a, b = d["offset"], d["offset"] + d["shift"], d["start_a"], d["start_b"]
  return {"x_a": cqt[o:o + c, a:a + s], "x_b": cqt[o:o + c, b:b + s],
          "x_a_shift": cqt[t:t + c, a:a + s]}


def make_views(cqt: np.ndarray, rng: np.random.Generator, spec: "ViewSpec") -> dict[str, Any]:
  """One record's views: cqt [n_bins, frames] -> x_* [crop_bins, segment_frames].

  Returns x_a, x_b, x_a_shift (spec.dtype), shift = t - o, and the draws
  (start_a, start_b, offset = o) for inspection.
  """
  d = draw(rng, cqt.shape[1], spec)
  views = {k: v.astype(spec.np_dtype) for k, v in crops(cqt, d, spec).items()}
  return {**views, **d}


def example_rng(seed: int, epoch: int, record: int) -> np.random.Generator:
  """The Generator of one record's views in one epoch."""
  return np.random.default_rng([seed, _VIEWS_STREAM, epoch, record])


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool = True) -> np.ndarray:
  """[n] the visiting order of a process's records in one epoch."""
  if not shuffle:
    return np.arange(n)
  return np.random.default_rng([seed, _SHUFFLE_STREAM, epoch]).permutation(n)


# --- Which records are usable -------------------------------------------------


def _shard_files(data_dir, split: str) -> list[pathlib.Path]:
  return sorted(pathlib.Path(data_dir).glob(f"{dataset.DATASET_NAME}-{split}.array_record-*"))


def _raw_num_frames(raw: bytes) -> int:
  """`num_frames` of a serialized record, without decoding its spectrum."""
  from tensorflow_datasets.proto import tf_example_pb2
  feature = tf_example_pb2.Example.FromString(raw).features.feature["num_frames"]
  return int(feature.int64_list.value[0])


def _lengths_from_parts(data_dir, split: str, n: int) -> np.ndarray | None:
  """`num_frames` lists in the shards' _parts/SPLIT-IIIII.json, if prepare wrote them."""
  lengths = []
  for path in sorted((pathlib.Path(data_dir) / "_parts").glob(f"{split}-*.json")):
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
      [(p.name, p.stat().st_size) for p in files] + [len(source)]).encode()).hexdigest()[:16]
  cache = pathlib.Path(data_dir) / _CACHE_DIR / f"num_frames-{split}.npz"
  try:
    with np.load(cache) as z:
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
    cache.parent.mkdir(exist_ok=True)
    tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, key=np.array(key), num_frames=lengths)
    os.replace(tmp, cache)
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


# --- The stream of batches ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
  """Everything that defines one process's stream of views (picklable)."""
  data_dir: str
  split: str
  records: np.ndarray        # [n] usable record indices (the whole stream's)
  seed: int
  shuffle: bool
  num_epochs: int | None     # None: repeat forever
  spec: ViewSpec
  local_batch_size: int
  process_index: int = 0
  process_count: int = 1
  debug: bool = False

  @property
  def num_elements(self) -> int:
    n = len(self.records)
    return sys.maxsize if self.num_epochs is None else n * self.num_epochs

  def identity(self) -> dict[str, Any]:
    """What a saved position is only meaningful with."""
    digest = hashlib.sha256(np.asarray(self.records, np.int64).tobytes()).hexdigest()[:16]
    return {"seed": self.seed, "shuffle": self.shuffle, "split": self.split,
            "records": len(self.records), "records_digest": digest,
            # The dtype only rounds the same views: free to change on resume.
            "spec": {k: v for k, v in dataclasses.asdict(self.spec).items() if k != "dtype"}}


class BatchMaker:
  """Batch index -> host-local batch; runs in Grain worker processes.

  Global batch b holds elements [start + b*G, start + (b+1)*G) of the stream
  (G = B * process_count); this process builds rows [i*B, (i+1)*B) of it. The
  data source is opened lazily in each process (file handles do not pickle).
  """

  def __init__(self, plan: Plan, start: int):
    self.plan, self.start = plan, start
    self._source = None
    self._orders: dict[int, np.ndarray] = {}

  def __getstate__(self):
    return {"plan": self.plan, "start": self.start}

  def __setstate__(self, state):
    self.__init__(**state)

  @property
  def source(self):
    if self._source is None:
      self._source = dataset.open_split(self.plan.data_dir, self.plan.split)
    return self._source

  def _order(self, epoch: int) -> np.ndarray:
    if epoch not in self._orders:
      if len(self._orders) > 2:  # Batches straddle at most two epochs.
        self._orders.pop(min(self._orders))
      self._orders[epoch] = epoch_order(self.plan.seed, epoch, len(self.plan.records),
                                        self.plan.shuffle)
    return self._orders[epoch]

  def element(self, position: int) -> tuple[int, int]:
    """(epoch, record) of stream element `position`."""
    epoch, i = divmod(position, len(self.plan.records))
    return epoch, int(self.plan.records[self._order(epoch)[i]])

  def __call__(self, b: int) -> dict[str, np.ndarray]:
    plan, spec = self.plan, self.plan.spec
    size = plan.local_batch_size
    first = self.start + b * size * plan.process_count + plan.process_index * size
    picks = [self.element(p) for p in range(first, first + size)]
    examples = self.source.__getitems__([r for _, r in picks])
    shape = (size, spec.crop_bins, spec.segment_frames)
    # Built in ordinary memory: Grain copies it to shared memory while the
    # worker's prefetch thread builds the next one, which measured faster
    # than building in shared memory directly.
    out = {k: np.empty(shape, spec.np_dtype) for k in VIEW_KEYS}
    meta = {k: np.empty(size, np.int32) for k in ("shift",) + DEBUG_KEYS}
    for i, ((epoch, record), ex) in enumerate(zip(picks, examples)):
      cqt = ex["cqt"]
      d = draw(example_rng(plan.seed, epoch, record), cqt.shape[1], spec)
      for k, view in crops(cqt, d, spec).items():
        out[k][i] = view  # One copy, casting from the stored float16.
      for k in ("shift", "start_a", "start_b", "offset"):
        meta[k][i] = d[k]
      meta["record"][i], meta["epoch"][i] = record, epoch
    out["shift"] = meta["shift"]
    if plan.debug:
      out.update({k: meta[k] for k in DEBUG_KEYS})
      out["track_id"] = np.array([ex["track_id"] for ex in examples])
    return out


class ViewsIterator:
  """Host-local (or, given a mesh, global) batches, with a resumable position.

  `next(it)` -> dict: x_a, x_b, x_a_shift [B, crop_bins, segment_frames]
  (data.dtype: float32, bfloat16 or float16), shift int32 [B]; plus, with
  debug, int32 record, epoch, start_a, start_b, offset and bytes track_id.
  B is the host-local
  batch size; with a mesh the arrays are global `jax.Array`s of batch_size
  rows (debug's track_id stays host-local numpy).

  get_state() -> bytes (JSON: stream elements consumed by the job and what the
  stream is made of); set_state(bytes) resumes at exactly the next batch, with
  any worker count, batch size or view dtype. Orbax saves it through
  `grain.checkpoint.CheckpointHandler` (`CheckpointSave(it)` /
  `CheckpointRestore(it)`), one file per process.
  """

  def __init__(self, plan: Plan, num_workers: int = 0, prefetch_buffer_size: int = 2,
               mesh: jax.sharding.Mesh | None = None,
               pspec: jax.sharding.PartitionSpec | None = None):
    self.plan = plan
    self.num_workers = int(num_workers)
    self.prefetch_buffer_size = int(prefetch_buffer_size)
    self.mesh, self.pspec = mesh, pspec
    self._position = 0  # stream elements consumed by the whole job
    self._it = None

  @property
  def position(self) -> int:
    return self._position

  @property
  def global_batch_size(self) -> int:
    return self.plan.local_batch_size * self.plan.process_count

  def _start(self) -> None:
    plan = self.plan
    num_batches = (plan.num_elements - self._position) // self.global_batch_size
    ds = grain.MapDataset.range(max(num_batches, 0)).map(BatchMaker(plan, self._position))
    # Each element is a whole batch: a deep buffer would hold many of them.
    # One thread per process builds the next batches (in a worker, while the
    # last one is copied out; in-process, while the accelerator runs).
    buffer = self.prefetch_buffer_size
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1 if buffer else 0,
                                              prefetch_buffer_size=buffer))
    if self.num_workers > 0:
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self.num_workers, per_worker_buffer_size=max(buffer, 1)))
    self._it = iter(ds)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, Any]:
    if self._it is None:
      self._start()
    batch = next(self._it)
    self._position += self.global_batch_size
    if self.mesh is not None:
      batch = make_global_batch(batch, self.mesh, self.pspec)
    return batch

  def start_prefetch(self) -> None:
    """Starts the workers now (e.g. while the model is being restored)."""
    if self._it is None:
      self._start()
    if hasattr(self._it, "start_prefetch"):
      self._it.start_prefetch()

  def get_state(self) -> bytes:
    return json.dumps({"version": STATE_VERSION, "position": self._position,
                       **self.plan.identity()}, indent=1).encode()

  def set_state(self, state: bytes | str | Mapping[str, Any]) -> None:
    if isinstance(state, (bytes, str)):
      state = json.loads(state)
    saved = {k: state.get(k) for k in self.plan.identity()}
    ours = json.loads(json.dumps(self.plan.identity()))  # tuples -> lists, as saved
    diffs = [f"{k}: saved {saved[k]!r}, now {ours[k]!r}" for k in ours if saved[k] != ours[k]]
    if diffs:
      raise ValueError(
          "The saved data-iterator position belongs to another stream of views "
          f"({'; '.join(diffs)}); resuming would not give the batches that came next. "
          "Restore with the run's data, seed and data.* settings, or start the data anew.")
    self.close()
    self._position = int(state["position"])

  def close(self) -> None:
    """Stops worker processes; the next `next()` restarts them where it was."""
    if self._it is not None and hasattr(self._it, "close"):
      self._it.close()
    self._it = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __del__(self):
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except
      pass


# --- Building it from a config ------------------------------------------------


def make_global_batch(local_batch: Mapping[str, Any], mesh: jax.sharding.Mesh,
                      pspec: jax.sharding.PartitionSpec | None = None) -> dict[str, Any]:
  """Host-local numpy batch -> global jax.Arrays sharded by `pspec` over `mesh`.

  Every process passes its own [B_local, ...] rows; the result has
  B_local * process_count rows, laid out over the devices of the batch axes
  (pspec's first entry, e.g. ('data', 'fsdp')). Non-numeric arrays (debug
  track ids) stay host-local numpy.
  """
  batch_sh = jax.sharding.NamedSharding(mesh, sharding.batch_spec(mesh, pspec))
  out = {}
  for k, v in local_batch.items():
    v = np.asarray(v)
    if v.dtype.kind in "biuf" or v.dtype == jax.numpy.bfloat16:
      out[k] = jax.make_array_from_process_local_data(batch_sh, v)
    else:
      out[k] = v
  return out


def _data_get(config, key: str, default):
  data = config.data
  value = data.get(key, default) if hasattr(data, "get") else getattr(data, key, default)
  return default if value is None else value


def make_plan(config: ml_collections.ConfigDict, *, split: str | None = None,
              debug: bool = False, shard: tuple[int, int] | None = None) -> Plan:
  """Opens the dataset, checks its CQT, picks usable records and this process's part.

  shard: (index, count) of this process; default Grain's ShardByJaxProcess.
  """
  split = split or _data_get(config, "split", "train")
  spec = ViewSpec.from_config(config.data)
  cqt = CQTConfig.from_mapping(config.cqt)
  spec.check(cqt.n_bins)
  if not config.data_dir:
    raise ValueError("config.data_dir is empty: set it to a prepared dataset "
                     "(`mt2 prepare --out DATA`), e.g. --config.data_dir=DATA.")
  source = dataset.open_split(config.data_dir, split, cqt)
  lengths = record_lengths(config.data_dir, split, source)

  def track_id(i):
    return source[i]["track_id"].decode()

  records = usable_records(lengths, spec.segment_frames, track_id)
  if shard is None:
    options = grain.sharding.ShardByJaxProcess(drop_remainder=True)
  else:
    options = grain.sharding.ShardOptions(shard[0], shard[1], drop_remainder=True)
  count = options.shard_count
  if config.batch_size % count:
    raise ValueError(f"batch_size {config.batch_size} is not divisible by the "
                     f"{count} processes.")
  local_batch_size = config.batch_size // count
  if len(records) < config.batch_size:
    logging.warning("Only %d usable records for %d tracks per batch: batches repeat "
                    "records (with other crops), which NT-Xent counts as negatives.",
                    len(records), config.batch_size)
  num_epochs = _data_get(config, "num_epochs", None)
  return Plan(data_dir=os.fspath(config.data_dir), split=split, records=records,
              seed=int(config.seed), shuffle=bool(_data_get(config, "shuffle", True)),
              num_epochs=None if num_epochs is None else int(num_epochs), spec=spec,
              local_batch_size=local_batch_size, process_index=options.shard_index,
              process_count=count, debug=debug)


def make_iterator(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None,
                  pspec: jax.sharding.PartitionSpec | None = None, *,
                  split: str | None = None, debug: bool = False,
                  num_workers: int | None = None,
                  shard: tuple[int, int] | None = None) -> ViewsIterator:
  """The training input: a checkpointable iterator of view batches.

  With `mesh`, batches are global jax.Arrays sharded by `pspec` (default: the
  leading dim over all mesh axes, i.e. P(('data', 'fsdp'))); without, numpy
  host-local batches. Reads config.seed, data_dir, batch_size, cqt and
  data.{segment_frames, crop_bins, max_offset, num_workers,
  prefetch_buffer_size} and, optionally, data.{split='train', shuffle=True,
  num_epochs=None, dtype='float32'}.
  """
  plan = make_plan(config, split=split, debug=debug, shard=shard)
  if mesh is not None:
    axes = sharding.batch_spec(mesh, pspec)[0]
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    ways = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
    if config.batch_size % ways:
      raise ValueError(f"batch_size {config.batch_size} is not divisible by the {ways} "
                       f"devices of the batch axes {axes}.")
  workers = _data_get(config, "num_workers", 0) if num_workers is None else num_workers
  return ViewsIterator(plan, num_workers=workers,
                       prefetch_buffer_size=_data_get(config, "prefetch_buffer_size", 2),
                       mesh=mesh, pspec=pspec)
