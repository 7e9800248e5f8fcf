"""Is the equivariant head learning? What `mt2 train` watches besides the losses.

CPSD's known failure is a head that gives every input the same profile: it
cannot follow a transposition, and the best such constant scores exactly
`constant_head_cpsd()` = 2.777 (on either circle). Three things show it:

- per step, inside the jitted loss (`losses.cpsd`'s aux, logged as
  `<loss>_abs_z`, `<loss>_spread`, `<loss>_argmax_moves`): a collapsed head has
  spread 0 and argmax_moves 0 (chance is 1/12, a perfect head 1);
- `CollapseDetector`: one warning when a CPSD loss sits at 2.777 for a long
  stretch of training;
- `ZeroShotKeyEval`: every `config.eval.every` steps, the zero-shot
  key-signature accuracy of each CPSD head on a labelled split
  (`<loss>_zeroshot_keysig`), what the head is for.
"""

import collections
import math
from typing import Mapping, Sequence

from absl import logging
import numpy as np

from mt2_jax import keys, storage

# The zero-shot readout takes at most this many windows per track by default.
MAX_WINDOWS = 4
DOCS = "docs/experiments.md"


def constant_head_cpsd(omega: float = 7 / 12, b_offset: str = "shared") -> float:
  """Expected CPSD of the best input-independent output (the collapse value).

  A constant profile gives z_A = z_B = z_A' = z; with r = |z|^2 each of the 3
  terms is 1 - 2 r cos(2 pi omega s) + r^2 for the shift s it asks for. The
  pipeline draws d mod 12 uniformly from 1..11, so E cos = c = mean_k
  cos(2 pi omega k), k = 1..11, for A-A'. With B at A's offset (the paper)
  A-B asks for s = 0 and B-A' for d: the expected loss 3 - 2 r (1 + 2c) + 3 r^2
  is least at r = (1 + 2c) / 3 (or 0): 3 - max(1 + 2c, 0)^2 / 3. For omega =
  7/12 or 1/12, c = -1/11: r = 3/11 and 3 - 27/121 = 2.777. With B at an
  offset of its own (`data.b_offset='own'`, u ~ U{1..12} independent of o) the
  A-B and B-A' shifts are uniform over all 12 classes, whose mean cosine is 0:
  3 - max(c, 0)^2 / 3, 3.0 on either circle (a uniform profile).
  """
  c = np.mean(np.cos(2 * np.pi * omega * np.arange(1, keys.NUM_PITCH_CLASSES)))
  if b_offset == "shared":  # A-B: cos 0 = 1; B-A': c.
    c_ab_ba = 1 + c
  else:
    c_ab_ba = 2 * np.mean(np.cos(2 * np.pi * omega * np.arange(keys.NUM_PITCH_CLASSES)))
  return float(3 - max(c + c_ab_ba, 0.0) ** 2 / 3)


COLLAPSE_CPSD = constant_head_cpsd()


def cpsd_losses(config) -> tuple[str, ...]:
  """Names of the config's CPSD losses (each has an equivariant head), sorted."""
  return tuple(sorted(n for n, l in config.losses.items() if l.kind == "cpsd"))


class CollapseDetector:
  """Warns once when a CPSD loss stays at the constant-head score.

  Fed the logged (step, value) pairs of one loss. Steps up to `warmup_steps`
  are ignored. It fires when the values logged over the last `span` steps,
  span = max(min_steps, fraction * (total_steps - warmup_steps)), are at
  `collapse_value`: split in 4 consecutive parts, the mean of each part is
  within `tolerance` of it. Means, not single values, because one step's CPSD
  is noisy: a constant head's varies with the batch's shifts, with a standard
  deviation of about 0.73 / sqrt(batch_size) (0.18 at 16 tracks). Four parts
  rather than one mean so that a loss falling through 2.777 does not count.
  Defaults: a quarter of training after warm-up, and at least 300 steps, so
  short runs (under 300 steps after warm-up) are never judged.
  """

  def __init__(self, name: str, total_steps: int, warmup_steps: int = 0,
               collapse_value: float = COLLAPSE_CPSD, tolerance: float = 0.1,
               fraction: float = 0.25, min_steps: int = 300):
    self.name = name
    self.warmup_steps = int(warmup_steps)
    self.collapse_value = float(collapse_value)
    self.tolerance = float(tolerance)
    self.span = max(int(min_steps), math.ceil(fraction * max(total_steps - warmup_steps, 0)))
    self.fired = False
    self._first = None  # The first step seen after warm-up.
    self._points = collections.deque()  # (step, value) in the trailing span.

  def update(self, step: int, value: float) -> str | None:
    """Adds a logged value; returns the warning the first time it applies, else None."""
    if self.fired or step <= self.warmup_steps:
      return None
    if self._first is None:
      self._first = step
    self._points.append((step, float(value)))
    while self._points[0][0] < step - self.span:
      self._points.popleft()
    if step - self._first < self.span or len(self._points) < 4:
      return None
    parts = np.array_split(np.array([v for _, v in self._points]), 4)
    if any(abs(p.mean() - self.collapse_value) >= self.tolerance for p in parts):
      return None
    self.fired = True
    return (f"{self.name} has stayed within {self.tolerance} of {self.collapse_value:.3f} from step "
            f"{self._points[0][0]} to {step}: {self.collapse_value:.3f} is the CPSD of an equivariant "
            f"head whose output ignores its input, so the head has most likely collapsed "
            f"({self.name}_argmax_moves and {self.name}_spread near 0 confirm it). See {DOCS}.")


def collapse_detectors(config) -> list[CollapseDetector]:
  """One CollapseDetector per CPSD loss of the config, at that loss's omega."""
  return [CollapseDetector(name, config.total_steps, config.optim.warmup_steps,
                           constant_head_cpsd(config.losses[name].get("omega", 7 / 12),
                                              config.data.get("b_offset", "shared")))
          for name in cpsd_losses(config)]


def progress_postfix(metrics: Mapping[str, float], cpsd_names: Sequence[str]) -> dict[str, str]:
  """The progress bar's summary: total loss, each CPSD loss and its argmax-moves fraction."""
  post = {"loss": f"{metrics['loss']:.4f}"}
  for name in cpsd_names:
    post[name] = f"{metrics[name]:.3f}"
    post[f"{name}_moves"] = f"{metrics[f'{name}_argmax_moves']:.2f}"
  return post


# -- The zero-shot key-signature eval. ------------------------------------------


def eval_enabled(config) -> bool:
  """config.eval.data_dir set and config.eval.every > 0."""
  ev = config.get("eval")
  return bool(ev and ev.get("data_dir") and ev.get("every", 0) > 0)


def check_eval_data(config) -> None:
  """Raises ValueError naming the key unless the eval split is usable (when eval is on).

  Reads only metadata: the folder is a prepared dataset with the config's
  CQT, has split `config.eval.split` and a `key` column.
  """
  if not eval_enabled(config):
    return
  from mt2_jax.data import dataset
  from mt2_jax.data.cqt import CQTConfig
  path = config.eval.data_dir
  try:
    storage.require_dir(path, "config.eval.data_dir")
  except OSError as e:
    raise ValueError(str(e)) from e
  try:
    builder = dataset.open_builder(storage.local_copy(path), CQTConfig.from_mapping(config.cqt))
  except (FileNotFoundError, dataset.CQTMismatchError) as e:
    raise ValueError(f"config.eval.data_dir: {e}") from e
  if "key" not in builder.info.features.keys():
    raise ValueError(f"config.eval.data_dir: {path} has no `key` column; prepare it from audio "
                     "with a labels.csv that has one (keys such as 'F# minor')")
  splits = list(builder.info.splits)
  if config.eval.split not in splits:
    raise ValueError(f"config.eval.split: {config.eval.split!r} is not in {path}; it has {splits}")


def centre_windows(num_frames: int, window: int, max_windows: int = MAX_WINDOWS) -> np.ndarray:
  """Starts of the min(max_windows, num_frames // window) back-to-back windows
  centred in a track of num_frames frames. -> int [n] (empty when it is shorter than one)."""
  n = min(max_windows, num_frames // window)
  return (num_frames - n * window) // 2 + window * np.arange(n)


def track_means(values: np.ndarray, track: np.ndarray, num_tracks: int) -> np.ndarray:
  """values [N, C], track int [N] in [0, num_tracks) -> per-track means [num_tracks, C]."""
  sums = np.zeros((num_tracks, values.shape[1]), np.float64)
  np.add.at(sums, track, values)
  return sums / np.bincount(track, minlength=num_tracks)[:, None]


def cross_fit_accuracy(profiles: np.ndarray, signature: np.ndarray, readout: str = "argmax",
                       omega: float = 7 / 12) -> float:
  """Key-signature accuracy of a head's readout with its rotation fitted on the other half.

  The head's readout is on an arbitrary rotation of the key signatures
  (keys.fit_rotation). Fitting it on the tracks it is scored on flatters it,
  so the tracks are cut in two contiguous halves (in record order: prepare
  sorts by file name, so the renditions of one piece mostly share a half);
  the rotation is fitted on one half and scored on the other, both ways.

  Args:
    profiles: [n, 12] each track's mean profile, n >= 2.
    signature: int [n] key signature (tonic of the relative major) 0..11.
    readout, omega: as keys.read_signatures.
  """
  profiles, signature = np.asarray(profiles), np.asarray(signature)
  first = np.arange(signature.size) < signature.size // 2
  hits = 0
  for fit in (first, ~first):
    rotation = keys.fit_rotation(profiles[fit], signature[fit], readout, omega)
    hits += np.sum(keys.read_signatures(profiles[~fit], rotation, readout, omega) == signature[~fit])
  return float(hits / signature.size)


def load_eval_windows(data_dir, split: str, crop_bins: int, window: int,
                      max_windows: int = MAX_WINDOWS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """A labelled split -> (windows, track, signature).

  Each record with a `key` and at least `window` frames is a track; its
  `centre_windows` at bin offset 0 (bins [0, crop_bins): untransposed) are kept.

  Returns:
    windows: float16 [N, crop_bins, window]; track: int [N], each window's
    track; signature: int [num_tracks], the key signature of its key.
  """
  from mt2_jax.data import dataset
  source = dataset.open_split(storage.local_copy(data_dir), split)
  windows, track, signature = [], [], []
  for i in range(len(source)):
    ex = source[i]
    key = ex["key"].decode() if isinstance(ex["key"], bytes) else str(ex["key"])
    starts = centre_windows(ex["cqt"].shape[1], window, max_windows)
    if not key or not starts.size:
      continue
    windows += [ex["cqt"][:crop_bins, s:s + window] for s in starts]
    track += [len(signature)] * starts.size
    signature.append(keys.key_signature(keys.key_class(key)))
  if len(signature) < 2:
    raise ValueError(f"config.eval.data_dir: {data_dir} ({split}) has {len(signature)} tracks with a "
                     f"key and at least {window} frames; the eval needs 2 or more")
  return (np.stack(windows).astype(np.float16, copy=False), np.asarray(track, np.int64),
          np.asarray(signature, np.int64))


class ZeroShotKeyEval:
  """`evaluate(params) -> {'<loss>_zeroshot_keysig': accuracy}` for every CPSD head.

  STONE's zero-shot readout, as `probe.zero_shot_key` but on the fly and
  cross-fitted: each track's centre windows (`load_eval_windows`) go through
  the model (eval mode), its head profiles are averaged over the windows, the
  readouts are rotated onto key signatures by `cross_fit_accuracy`. The windows
  go in chunks of 3 * batch_size, the train step's forward size (so memory is
  known), the last zero-padded (so it compiles once), sharded like a batch;
  every process holds the whole (small) split and gets the profiles back.
  """

  def __init__(self, config, model, mesh):
    import flax.linen as nn
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P
    from mt2_jax import model as model_lib
    from mt2_jax import sharding
    ev = config.eval
    self.windows, self.track, self.signature = load_eval_windows(
        ev.data_dir, ev.split, config.data.crop_bins, config.data.segment_frames,
        ev.get("max_windows", MAX_WINDOWS))
    self.heads = cpsd_losses(config)
    self.omegas = {name: config.losses[name].get("omega", 7 / 12) for name in self.heads}
    self.mesh = mesh
    self.chunk = 3 * config.batch_size
    self._sharding = sharding.batch_sharding(mesh)
    rules = model_lib.logical_axis_rules(config.sharding)

    def profiles(params, x):
      with nn.logical_axis_rules(rules):
        out = model.apply({"params": params}, x, train=False)
      return {name: out[f"head_{name}"] for name in self.heads}

    self._profiles = jax.jit(profiles, out_shardings=NamedSharding(mesh, P()))
    logging.info("zero-shot eval: %d tracks, %d windows of %s (%s)", self.signature.size,
                 self.track.size, ev.data_dir, ev.split)

  def __call__(self, params) -> dict[str, float]:
    import jax
    n = self.track.size
    parts = {name: [] for name in self.heads}
    with jax.set_mesh(self.mesh):
      for lo in range(0, n, self.chunk):
        x = np.zeros((self.chunk,) + self.windows.shape[1:], np.float32)
        x[:min(self.chunk, n - lo)] = self.windows[lo:lo + self.chunk]
        x = jax.make_array_from_callback(x.shape, self._sharding, lambda index, x=x: x[index])
        for name, y in self._profiles(params, x).items():
          parts[name].append(np.asarray(y))
    out = {}
    for name, chunks in parts.items():
      per_track = track_means(np.concatenate(chunks)[:n], self.track, self.signature.size)
      out[f"{name}_zeroshot_keysig"] = cross_fit_accuracy(per_track, self.signature)
      omega = self.omegas[name]
      if keys.has_phase_readout(omega):  # The phase readout (keys.phase_class).
        out[f"{name}_zeroshot_keysig_phase"] = cross_fit_accuracy(
            per_track, self.signature, "phase", omega)
    return out


def make_eval(config, model, mesh) -> ZeroShotKeyEval | None:
  """The periodic eval of config.eval, or None when it is off."""
  if not eval_enabled(config):
    if config.get("eval") and config.eval.get("data_dir"):
      logging.warning("config.eval.data_dir is set but config.eval.every is 0: no zero-shot eval.")
    return None
  return ZeroShotKeyEval(config, model, mesh)


__all__ = ["COLLAPSE_CPSD", "CollapseDetector", "ZeroShotKeyEval", "centre_windows",
           "check_eval_data", "collapse_detectors", "constant_head_cpsd", "cpsd_losses",
           "cross_fit_accuracy", "eval_enabled", "load_eval_windows", "make_eval",
           "progress_postfix", "track_means"]
