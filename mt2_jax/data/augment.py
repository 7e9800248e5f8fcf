"""How one track becomes the views of both pretext tasks (docs/design.md §1.2).

Two non-overlapping random crops of `segment_frames` frames (segments A and
B) and a transposition by cropping frequency bins: `o ~ U{1..max_offset}`,
`t = (o + U{1..11}) mod 12`, `d = t - o` (never 0, in [-11, 10]); x_a = bins
[o, o+84) of A, x_b = the same bins of B, x_a_shift = bins [t, t+84) of A.
With `b_offset='own'`, B is cut at an offset u ~ U{1..max_offset} of its own
(x_b = bins [u, u+84) of B) and `shift_b = u - o` says how far.
Every draw comes from a numpy Generator seeded by (seed, epoch, record), so the
views do not depend on workers, timing or the number of processes.
"""

import dataclasses
from typing import Any, Mapping

import jax
import numpy as np

# Offsets and shifts live on the 12 pitch classes (docs/design.md §1.2).
from mt2_jax.keys import NUM_PITCH_CLASSES as PITCH_CLASSES
VIEW_KEYS = ("x_a", "x_b", "x_a_shift")
B_OFFSETS = ("shared", "own")  # ViewSpec.b_offset.


def shift_keys(b_offset: str = "shared") -> tuple[str, ...]:
  """The int32 [B] entries of a batch beside its views: 'shift', and 'shift_b' with 'own'."""
  return ("shift", "shift_b") if b_offset == "own" else ("shift",)

# Separate random streams per purpose: a record's views never share numbers
# with an epoch's shuffle.
_VIEWS_STREAM, _SHUFFLE_STREAM = 1, 2


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
  # > 0: segments A and B are each heard through their own random EQ, a
  # smooth curve over log-frequency of up to +-colour_db dB (colour_curve), so
  # that NT-Xent cannot match them by their recording's colour. x_a and
  # x_a_shift share A's curve, over absolute frequency: the shifted view stays
  # exactly A transposed. 0: the paper's views.
  colour_db: float = 0.0
  # 'shared': B is cut at A's offset o, so A and B share the transposition (the
  # paper). 'own': at an offset u of its own, drawn after the paper's numbers;
  # CPSD's A-B term then asks for the shift u - o (docs/design.md §1.2).
  b_offset: str = "shared"

  @classmethod
  def from_config(cls, data: Mapping[str, Any]) -> "ViewSpec":
    return cls(segment_frames=int(data["segment_frames"]), crop_bins=int(data["crop_bins"]),
               max_offset=int(data["max_offset"]), dtype=str(data.get("dtype", "float32")),
               colour_db=float(data.get("colour_db", 0.0)),
               b_offset=str(data.get("b_offset", "shared")))

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
    if not self.colour_db >= 0:
      raise ValueError(f"data.colour_db must be >= 0, got {self.colour_db}")
    if self.b_offset not in B_OFFSETS:
      raise ValueError(f"data.b_offset must be one of {B_OFFSETS}, got {self.b_offset!r}")
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


def draw_shifts(rng: np.random.Generator, n: int, max_offset: int = 12) -> np.ndarray:
  """int32 [n]: shifts d = t - o as the views draw them (never 0, in [-11, 10])."""
  return np.array([t - o for o, t in (draw_offsets(rng, max_offset) for _ in range(n))], np.int32)


def draw(rng: np.random.Generator, num_frames: int, spec: "ViewSpec") -> dict[str, int]:
  """One record's random choices: crop starts, then offsets (in this order), then
  with b_offset='own' B's offset u (as `shift_b` = u - o)."""
  start_a, start_b = crop_starts(rng, num_frames, spec.segment_frames)
  o, t = draw_offsets(rng, spec.max_offset)
  d = {"start_a": start_a, "start_b": start_b, "offset": o, "shift": t - o}
  if spec.b_offset == "own":
    d["shift_b"] = int(rng.integers(1, spec.max_offset + 1)) - o
  return d


COLOUR_KNOTS = 6  # Of the EQ curve over the CQT's bins: one about every octave and a half.
TOP_DB = 80.0  # One unit of the stored CQT (mt2_jax/data/cqt.py: x = dB / 80 + 1).


def colour_curve(rng: np.random.Generator, n_bins: int, colour_db: float) -> np.ndarray:
  """float32 [n_bins, 1]: a random EQ in stored CQT units (dB / TOP_DB).

  Gains U(-colour_db, colour_db) at COLOUR_KNOTS evenly spaced bins, linearly
  interpolated: a smooth colouring like a microphone's or a room's.
  """
  knots = rng.uniform(-colour_db, colour_db, COLOUR_KNOTS)
  curve = np.interp(np.arange(n_bins), np.linspace(0, n_bins - 1, COLOUR_KNOTS), knots)
  return (curve / TOP_DB).astype(np.float32)[:, None]


def view_arrays(cqt: np.ndarray, rng: np.random.Generator, d: Mapping[str, int],
                spec: "ViewSpec") -> dict[str, np.ndarray]:
  """x_a, x_b, x_a_shift of cqt [n_bins, frames] for the draws d: the crops,
  plus segment A's and B's own random EQ when spec.colour_db > 0.

  The EQ is drawn from rng after `draw`'s numbers, so the crops are those of
  uncoloured views. Values stay >= 0, the stored CQT's floor (80 dB below the
  example's peak). Without colour: views into cqt (no copy).
  """
  plain = crops(cqt, d, spec)
  if not spec.colour_db:
    return plain
  a, b = (colour_curve(rng, cqt.shape[0], spec.colour_db) for _ in range(2))
  o, t, c = d["offset"], d["offset"] + d["shift"], spec.crop_bins
  u = o + d.get("shift_b", 0)
  curves = {"x_a": a[o:o + c], "x_b": b[u:u + c], "x_a_shift": a[t:t + c]}
  return {k: np.maximum(v + curves[k], 0.0) for k, v in plain.items()}


def crops(cqt: np.ndarray, d: Mapping[str, int], spec: "ViewSpec") -> dict[str, np.ndarray]:
  """x_a, x_b, x_a_shift as views into cqt [n_bins, frames] (no copy)."""
  s, c = spec.segment_frames, spec.crop_bins
  o, t, a, b = d["offset"], d["offset"] + d["shift"], d["start_a"], d["start_b"]
  u = o + d.get("shift_b", 0)
  return {"x_a": cqt[o:o + c, a:a + s], "x_b": cqt[u:u + c, b:b + s],
          "x_a_shift": cqt[t:t + c, a:a + s]}


def make_views(cqt: np.ndarray, rng: np.random.Generator, spec: "ViewSpec") -> dict[str, Any]:
  """One record's views: cqt [n_bins, frames] -> x_* [crop_bins, segment_frames].

  Returns x_a, x_b, x_a_shift (spec.dtype), shift = t - o (and shift_b =
  u - o with b_offset='own'), and the draws (start_a, start_b, offset = o)
  for inspection.
  """
  d = draw(rng, cqt.shape[1], spec)
  return {**{k: v.astype(spec.np_dtype) for k, v in view_arrays(cqt, rng, d, spec).items()}, **d}


def example_rng(seed: int, epoch: int, record: int) -> np.random.Generator:
  """The Generator of one record's views in one epoch."""
  return np.random.default_rng([seed, _VIEWS_STREAM, epoch, record])


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool = True,
                groups: np.ndarray | None = None) -> np.ndarray:
  """[n] the visiting order of a process's records in one epoch.

  groups: optional [n] int group of each record (`data.group_pattern`): the
  groups come in a random order and each one's records consecutively (in a
  random order too), so a batch holds whole groups.
  """
  if not shuffle:
    return np.arange(n) if groups is None else np.argsort(groups, kind="stable")
  rng = np.random.default_rng([seed, _SHUFFLE_STREAM, epoch])
  if groups is None:
    return rng.permutation(n)
  groups = np.asarray(groups)
  group_rank = rng.permutation(int(groups.max()) + 1)
  return np.lexsort((rng.random(n), group_rank[groups]))
