"""The Grain input pipeline: per track, the views of both pretext tasks (docs/design.md §1.2).

  it = pipeline.make_iterator(config, mesh)      # checkpointable, yields global batches
  batch = next(it)                               # {'x_a', 'x_b', 'x_a_shift', 'shift'}
  state = it.get_state(); it.set_state(state)    # or Orbax: grain.checkpoint.CheckpointSave(it)

Per track and per visit, two non-overlapping random crops of `segment_frames`
frames (segments A and B) and a transposition by cropping frequency bins:
`o ~ U{1..max_offset}`, `t = (o + U{1..11}) mod 12`, `d = t - o` (never 0, in
[-11, 10]: every non-zero pitch class once mod 12); x_a = bins [o, o+84) of
segment A, x_b = the same bins of B (with `data.b_offset='own'` bins [u, u+84),
u an offset of its own, and `shift_b = u - o`), x_a_shift = bins [t, t+84) of A. A larger
offset shows the content lower, so a pitch at row r of x_a sits at row r - d
of x_a_shift, and `argmax(x_a) - argmax(x_a_shift) == shift` for a pure tone.

Determinism. Element p of the (global) stream is record `records[perm_e[i]]`
with `(e, i) = divmod(p, len(records))` and `perm_e` a permutation drawn from
(seed, e) (with `data.group_pattern`, one that keeps each group's records
together: `augment.epoch_order`); its crops and offsets are drawn from a numpy
Generator seeded with (seed, e, record). Nothing depends on worker count, timing, or the number of
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
import sys
from typing import Any, Mapping

from absl import logging
import grain
import jax
import ml_collections
import numpy as np

from mt2_jax import sharding, storage
from mt2_jax.data import dataset
from mt2_jax.data.augment import (VIEW_KEYS, ViewSpec, draw, epoch_order, example_rng, shift_keys,
                                  view_arrays)
from mt2_jax.data.records import record_groups, record_lengths, usable_records

# Extra int32 keys of debug batches, plus `track_id` (bytes).
DEBUG_KEYS = ("record", "epoch", "start_a", "start_b", "offset")
STATE_VERSION = 2  # 2: position counts global elements
# Plan.identity() keys written only when set, so that older positions stay valid.
IDENTITY_DEFAULTS = {"group_pattern": ""}
from mt2_jax.data.cqt import CQTConfig

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
  group_pattern: str = ""          # data.group_pattern; '' visits records, not groups
  groups: np.ndarray | None = None  # [n] group of each record, with group_pattern

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
            # b_offset only where it is not the paper's (positions saved before it existed).
            "spec": {k: v for k, v in dataclasses.asdict(self.spec).items()
                     if k != "dtype" and (k, v) != ("b_offset", "shared")},
            **({"group_pattern": self.group_pattern} if self.group_pattern else {})}


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
                                        self.plan.shuffle, self.plan.groups)
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
    shifts = shift_keys(spec.b_offset)
    meta = {k: np.empty(size, np.int32) for k in shifts + DEBUG_KEYS}
    for i, ((epoch, record), ex) in enumerate(zip(picks, examples)):
      cqt = ex["cqt"]
      rng = example_rng(plan.seed, epoch, record)
      d = draw(rng, cqt.shape[1], spec)
      for k, view in view_arrays(cqt, rng, d, spec).items():
        out[k][i] = view  # One copy, casting from the stored float16.
      for k in shifts + ("start_a", "start_b", "offset"):
        meta[k][i] = d[k]
      meta["record"][i], meta["epoch"][i] = record, epoch
    out.update({k: meta[k] for k in shifts})
    if plan.debug:
      out.update({k: meta[k] for k in DEBUG_KEYS})
      out["track_id"] = np.array([ex["track_id"] for ex in examples])
    return out


class ViewsIterator:
  """Host-local (or, given a mesh, global) batches, with a resumable position.

  `next(it)` -> dict: x_a, x_b, x_a_shift [B, crop_bins, segment_frames]
  (data.dtype: float32, bfloat16 or float16), shift int32 [B] (and shift_b
  int32 [B] with data.b_offset='own'); plus, with
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
    # tuples -> lists, as saved; keys identity() leaves out at their default.
    ours = {**IDENTITY_DEFAULTS, **json.loads(json.dumps(self.plan.identity()))}
    saved = {k: state.get(k, IDENTITY_DEFAULTS.get(k)) for k in ours}
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
  data_dir = storage.local_copy(config.data_dir)  # A bucket dataset: its local copy.
  source = dataset.open_split(data_dir, split, cqt)
  lengths = record_lengths(data_dir, split, source)

  def track_id(i):
    return source[i]["track_id"].decode()

  records = usable_records(lengths, spec.segment_frames, track_id)
  if shard is None:
    options = grain.sharding.ShardByJaxProcess(drop_remainder=True)
  else:
    options = grain.sharding.ShardOptions(shard[0], shard[1], drop_remainder=True)
  count = options.shard_count
  sharding.check_batch_divides(config.batch_size, count, "processes")
  local_batch_size = config.batch_size // count
  if len(records) < config.batch_size:
    logging.warning("Only %d usable records for %d tracks per batch: batches repeat "
                    "records (with other crops), which NT-Xent counts as negatives.",
                    len(records), config.batch_size)
  num_epochs = _data_get(config, "num_epochs", None)
  group_pattern = _data_get(config, "group_pattern", "")
  groups = (record_groups(data_dir, split, source, records, group_pattern)
            if group_pattern else None)
  return Plan(data_dir=os.fspath(data_dir), split=split, records=records,
              seed=int(config.seed), shuffle=bool(_data_get(config, "shuffle", True)),
              num_epochs=None if num_epochs is None else int(num_epochs), spec=spec,
              local_batch_size=local_batch_size, process_index=options.shard_index,
              process_count=count, debug=debug, group_pattern=group_pattern, groups=groups)


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
  prefetch_buffer_size} and, optionally, data.{split='train', shuffle=True, colour_db=0,
  num_epochs=None, dtype='float32', group_pattern=''}.
  """
  plan = make_plan(config, split=split, debug=debug, shard=shard)
  if mesh is not None:
    axes = sharding.batch_spec(mesh, pspec)[0]
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    ways = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
    sharding.check_batch_divides(config.batch_size, ways, f"devices of the batch axes {axes}")
  workers = _data_get(config, "num_workers", 0) if num_workers is None else num_workers
  return ViewsIterator(plan, num_workers=workers,
                       prefetch_buffer_size=_data_get(config, "prefetch_buffer_size", 2),
                       mesh=mesh, pspec=pspec)
