"""`mt2 probe`: linear probes on frozen features of a run (docs/design.md §1.6).

  mt2 probe --workdir=RUN --data DIR --task key,chorale_instrument [--out REPORT_DIR]

DIR is a labelled audio folder with labels.csv beside the audio, as `mt2
corpus` writes it (columns `file`, `split`, `key`, `instrument`, `pitch`,
`set`). Its `split` column decides: train fits the probe, validation stops it
early, test alone is scored.

Protocol, the same for every feature (each `cls_<token>`, `cls_mean`,
`tokens_mean`, averaged over a track's windows): features standardised with
the training split's mean and deviation, one linear layer (softmax regression)
trained full-batch with Adam (lr 1e-3) on cross-entropy, validation loss
checked every `eval_every` steps, the parameters of the best check kept,
stopped after `patience` checks without improvement.

Tasks:
  key         chorales (rows with a `key`): 24 classes, scored by the MIREX
              weighted score (mir_eval.key.weighted_score, mean over test
              tracks); also key-signature accuracy (12 classes: a key and its
              relative major/minor share one).
  instrument  the note set (rows with set == note): accuracy.
  chorale_instrument
              the instrument of whole chorale renditions (rows with set ==
              chorale): accuracy. The split column as is: by piece, so no
              rendition of a test piece is heard in training.
  pitch       the note set, MIDI pitch: accuracy. The corpus splits notes by
              pitch, so a test pitch never occurs in training; this task
              re-splits the notes by instrument instead (sorted instrument
              names: the last is test, the one before validation).

Reference rows:
  zero-shot   the equivariant head (STONE): its 12-dim profile averaged over
              windows, argmax, plus one rotation (0..11) chosen on the
              training split; this gives a key signature only, so it is scored
              as key-signature accuracy (the MIREX column stays empty).
  untrained   the same probes on a randomly initialised model of the same
              config (what the architecture gives before any training).
  kk_chroma   the classic template estimator, no training: chroma (librosa
              `chroma_cqt` of the CQT of the model's front-end, A0 upwards)
              averaged over the track, correlated with the 24 rotations of
              the Krumhansl-Kessler profiles; scored like the key probes.
  MFCC stats  20 MFCCs (librosa.feature.mfcc of the audio at the model's
              sample rate), mean and deviation over the track (40 dims),
              probed like the features on every task: what plain timbre
              statistics give.

Scores are means over test tracks of a per-track score (MIREX weighted
score, key-signature hit, hit), each with a 95% confidence interval from
1000 bootstrap resamples of the test tracks (seeded, so reruns agree): in
results.json `mirex_ci`, `key_signature_ci`, `accuracy_ci` = [lo, hi] beside
the score, and `n_test`; in the table `0.711 [0.62-0.80]`; error bars in
the chart. A task without train or test examples is skipped.

Features are cached per run in `RUN/probe_cache/` (keyed by checkpoint step
and the data's file list; chroma and MFCCs likewise), so probing again, or on
another task, does not embed again. Results go to `RUN/probe/` (or --out):
results.json, results.md (a Markdown table: rows model x feature, columns
tasks) and probe.png (a bar chart).
"""

import csv
import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from mt2_jax.eval import embed as embed_lib
from mt2_jax.eval.embed import OUT_HELP, define_flag

define_flag(flags.DEFINE_string, "workdir", None, "Training run folder (config.json + checkpoints).")
define_flag(flags.DEFINE_string, "data", None, "Labelled audio folder (labels.csv beside the audio).")
define_flag(flags.DEFINE_list, "task", ["key"],
            "Tasks, comma-separated: key, instrument, chorale_instrument, pitch.")
define_flag(flags.DEFINE_string, "out", None, OUT_HELP)
define_flag(flags.DEFINE_integer, "step", None, "Checkpoint step (default: the latest).")
define_flag(flags.DEFINE_bool, "untrained", True, "Also probe a randomly initialised model.")
FLAGS = flags.FLAGS

SPLITS = ("train", "validation", "test")
TASKS = ("key", "instrument", "chorale_instrument", "pitch")
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
# Krumhansl & Kessler (1982) probe-tone profiles, tonic first.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


# -- Labels. ----------------------------------------------------------------

def read_examples(data_dir) -> list[dict[str, str]]:
  """Rows of every labels.csv under data_dir, `file` made relative to data_dir.

  Rows whose audio file is missing are dropped. Sorted by file.
  """
  data_dir = pathlib.Path(data_dir)
  rows = []
  for csv_path in sorted(data_dir.rglob("labels.csv")):
    base = csv_path.parent.relative_to(data_dir)
    with open(csv_path, newline="") as f:
      for row in csv.DictReader(f):
        row = dict(row)
        row["file"] = (base / row["file"]).as_posix()
        if (data_dir / row["file"]).is_file():
          rows.append(row)
  if not rows:
    raise FileNotFoundError(f"no labelled audio under {data_dir} (labels.csv with a `file` column)")
  return sorted(rows, key=lambda r: r["file"])


def key_class(label: str) -> int:
  """'F# minor' -> 2 * tonic + (mode == minor), in [0, 24)."""
  import mir_eval
  tonic, mode = mir_eval.key.split_key_string(label)
  return 2 * int(tonic) + int(mode == "minor")


def key_name(index: int) -> str:
  """Inverse of key_class, spelt as mir_eval accepts."""
  return f"{PITCH_NAMES[index // 2]} {'minor' if index % 2 else 'major'}"


def key_signature(index: int) -> int:
  """Key class -> the tonic of its relative major (the key signature), 0..11."""
  tonic, minor = index // 2, index % 2
  return (tonic + 3 * minor) % 12


@dataclasses.dataclass
class TaskData:
  """One task's examples: indices into the rows, class ids, splits, class names."""
  name: str
  index: np.ndarray    # int [n]
  y: np.ndarray        # int [n]
  split: np.ndarray    # str [n]
  classes: list[str]


def task_data(task: str, rows: Sequence[dict[str, str]]) -> TaskData:
  """Selects a task's rows and labels (module docstring)."""
  if task == "key":
    idx = [i for i, r in enumerate(rows) if r.get("key")]
    y = [key_class(rows[i]["key"]) for i in idx]
    classes = [key_name(c) for c in range(24)]
    split = [rows[i].get("split", "") for i in idx]
  elif task in ("instrument", "pitch", "chorale_instrument"):
    if task == "chorale_instrument":
      column, keep = "instrument", lambda r: r.get("set") == "chorale"
    else:  # The note set; in a folder without one (not the corpus), every row.
      has_notes = any(r.get("set") == "note" for r in rows)
      column, keep = task, lambda r: r.get("set") == "note" or not has_notes
    idx = [i for i, r in enumerate(rows) if r.get(column) and keep(r)]
    values = [rows[i][column] for i in idx]
    if task == "pitch":
      values = [str(int(float(v))) for v in values]
    classes = sorted(set(values), key=lambda v: (len(v), v))
    y = [classes.index(v) for v in values]
    split = [rows[i].get("split", "") for i in idx]
    if task == "pitch":
      # Held-out pitches cannot be classified; hold out instruments instead.
      instruments = sorted({rows[i].get("instrument", "") for i in idx})
      if len(instruments) >= 3:
        role = {instruments[-1]: "test", instruments[-2]: "validation"}
        split = [role.get(rows[i].get("instrument", ""), "train") for i in idx]
  else:
    raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
  return TaskData(task, np.asarray(idx, np.int64), np.asarray(y, np.int64), np.asarray(split, str),
                  classes)


# -- The linear probe. --------------------------------------------------------

def _log_softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def fit_linear_probe(x_train, y_train, x_val, y_val, num_classes: int, lr: float = 1e-3,
                     max_steps: int = 10000, eval_every: int = 10, patience: int = 50):
  """Softmax regression, full-batch Adam, early stopping on validation loss.

  x_*: float [n, d]; y_*: int [n]. Returns predict(x [m, d]) -> logits [m, C]
  and info {steps, best_step, val_loss}. Deterministic (zero init).
  """
  x_train = np.asarray(x_train, np.float64)
  mean, std = x_train.mean(0), x_train.std(0) + 1e-6
  norm = lambda x: (np.asarray(x, np.float64) - mean) / std
  xt, xv = norm(x_train), norm(x_val)
  onehot = np.eye(num_classes)[y_train]
  params = [np.zeros((xt.shape[1], num_classes)), np.zeros(num_classes)]
  m = [np.zeros_like(p) for p in params]
  v = [np.zeros_like(p) for p in params]
  b1, b2, eps = 0.9, 0.999, 1e-8

  def val_loss(w, b):
    if len(y_val) == 0:
      return 0.0
    return float(-_log_softmax(xv @ w + b)[np.arange(len(y_val)), y_val].mean())

  best = (val_loss(*params), 0, [p.copy() for p in params])
  bad = 0
  step = 0
  for step in range(1, max_steps + 1):
    w, b = params
    probs = np.exp(_log_softmax(xt @ w + b))
    g = (probs - onehot) / len(xt)
    grads = [xt.T @ g, g.sum(0)]
    for i, (p, gr) in enumerate(zip(params, grads)):
      m[i] = b1 * m[i] + (1 - b1) * gr
      v[i] = b2 * v[i] + (1 - b2) * gr * gr
      p -= lr * (m[i] / (1 - b1 ** step)) / (np.sqrt(v[i] / (1 - b2 ** step)) + eps)
    if step % eval_every == 0:
      loss = val_loss(*params)
      if loss < best[0] - 1e-6:
        best, bad = (loss, step, [p.copy() for p in params]), 0
      else:
        bad += 1
        if bad >= patience:
          break
  w, b = best[2]
  predict = lambda x: norm(x) @ w + b
  return predict, {"steps": step, "best_step": best[1], "val_loss": best[0]}


def track_scores(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, np.ndarray]:
  """Per-track scores, float [n] each: key -> 'key' (MIREX weighted score) and
  'key_signature' (hit); other tasks -> {task: hit}."""
  if task != "key":
    return {task: np.asarray(y_true == y_pred, np.float64)}
  import mir_eval
  pairs = [(int(t), int(p)) for t, p in zip(y_true, y_pred)]
  return {"key": np.array([mir_eval.key.weighted_score(key_name(t), key_name(p)) for t, p in pairs]),
          "key_signature": np.array([key_signature(t) == key_signature(p) for t, p in pairs], np.float64)}


def ci_name(metric: str) -> str:
  """The results key of a metric's confidence interval."""
  return {"key": "mirex_ci", "key_signature": "key_signature_ci"}.get(metric, "accuracy_ci")


def bootstrap_ci(values: np.ndarray, resamples: int = 1000, level: float = 0.95,
                 seed: int = 0) -> list[float]:
  """[lo, hi]: percentile interval of the mean of values [n] (per test track),
  the tracks resampled with replacement. Seeded: the same values, the same interval."""
  values = np.asarray(values, np.float64)
  rng = np.random.default_rng(seed)
  means = values[rng.integers(0, values.size, (resamples, values.size))].mean(1)
  return [float(q) for q in np.quantile(means, [(1 - level) / 2, (1 + level) / 2])]


def summarize(per_track: dict[str, np.ndarray]) -> dict[str, Any]:
  """{metric: mean, ci_name(metric): bootstrap_ci} of per-track scores; {} without tracks."""
  out = {}
  for metric, values in per_track.items():
    if len(values):
      out[metric], out[ci_name(metric)] = float(np.mean(values)), bootstrap_ci(values)
  return out


def score(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
  """Test-set scores of track_scores, each with its 95% interval; {} without tracks."""
  return summarize(track_scores(task, y_true, y_pred))


def probe_feature(task: TaskData, features: np.ndarray, **fit_kwargs) -> dict[str, Any]:
  """Fits the probe on task.split == train, stops on validation, scores test."""
  x = features[task.index]
  parts = {s: task.split == s for s in SPLITS}
  if not parts["train"].any() or not parts["test"].any():
    raise ValueError(f"task {task.name}: needs train and test examples "
                     f"(got {dict((s, int(p.sum())) for s, p in parts.items())})")
  predict, info = fit_linear_probe(
      x[parts["train"]], task.y[parts["train"]], x[parts["validation"]], task.y[parts["validation"]],
      len(task.classes), **fit_kwargs)
  pred = predict(x[parts["test"]]).argmax(1)
  return {**score(task.name, task.y[parts["test"]], pred), **info,
          "n_train": int(parts["train"].sum()), "n_test": int(parts["test"].sum())}


# -- References without a probe. ----------------------------------------------

def phase_class(profiles: np.ndarray, omega: float = 7 / 12) -> np.ndarray:
  """The class whose point on CPSD's circle is nearest to the profile's z: [n, 12] -> int [n].

  z = sum_q y[q] exp(2j pi omega q) is all that CPSD trains; the class q sits at
  angle 2 pi omega q. With omega = m/12 (m coprime to 12), the nearest of the
  12 angles is step k = round(12 angle / 2 pi) and q = k m^-1 mod 12.
  """
  m = round(omega * 12)
  inverse = pow(m, -1, 12)  # ValueError when m shares a factor with 12 (no readout).
  z = profiles @ np.exp(2j * np.pi * omega * np.arange(12))
  k = np.round(np.angle(z) * 12 / (2 * np.pi)).astype(np.int64)
  return (k * inverse) % 12


ZERO_SHOT_READOUTS = ("argmax", "phase")


def best_rotation(peak: np.ndarray, signature: np.ndarray) -> int:
  """The r in 0..11 for which (peak + r) mod 12 matches `signature` most often (ties: smallest).

  The head's class index sits on an arbitrary rotation of the key signatures.
  """
  return int(np.argmax([np.sum((peak + r) % 12 == signature) for r in range(12)]))


def zero_shot_key(task: TaskData, profiles: np.ndarray, readout: str = "argmax",
                  omega: float = 7 / 12) -> dict[str, Any]:
  """The head as a key-signature estimator, + one rotation (0..11) fit on train.

  readout 'argmax' is STONE's (the peak of the window-averaged profile);
  'phase' reads the angle of its z on CPSD's circle (`phase_class`), which is
  what CPSD constrains: a profile can turn its z with the transposition while
  its peak does not follow (docs/experiments.md).
  profiles: [n_rows, 12]. Returns {'key_signature': test accuracy, its interval, 'rotation'}.
  """
  if readout not in ZERO_SHOT_READOUTS:
    raise ValueError(f"readout must be one of {ZERO_SHOT_READOUTS}, got {readout!r}")
  x = profiles[task.index]
  peak = x.argmax(1) if readout == "argmax" else phase_class(x, omega)
  sig = np.array([key_signature(int(c)) for c in task.y])
  train, test = task.split == "train", task.split == "test"
  r = best_rotation(peak[train], sig[train])
  return {**summarize({"key_signature": (peak[test] + r) % 12 == sig[test]}), "rotation": r,
          "n_train": int(train.sum()), "n_test": int(test.sum())}


def kk_key_scores(chroma: np.ndarray) -> np.ndarray:
  """Krumhansl-Kessler: chroma [n, 12] -> correlations [n, 24] in key_class order."""
  templates = np.zeros((24, 12))
  for tonic in range(12):
    templates[2 * tonic] = np.roll(KK_MAJOR, tonic)
    templates[2 * tonic + 1] = np.roll(KK_MINOR, tonic)
  t = templates - templates.mean(1, keepdims=True)
  c = chroma - chroma.mean(1, keepdims=True)
  return (c @ t.T) / (np.linalg.norm(c, axis=1, keepdims=True) * np.linalg.norm(t, axis=1) + 1e-12)


def kk_key(task: TaskData, chroma: np.ndarray) -> dict[str, Any]:
  """The KK template estimator scored on the test split (no training)."""
  test = task.split == "test"
  pred = kk_key_scores(chroma[task.index[test]]).argmax(1)
  return {**score("key", task.y[test], pred), "n_test": int(test.sum())}


def _frame_stats(x: np.ndarray, sample_rate: int, frames_of, block_seconds: float = 60.0):
  """Mean and deviation over time, [d] each, of frames_of(block of x) -> [d, t].

  A bounded block at a time, so that a long track does not hold its whole
  spectrogram in memory.
  """
  block = int(block_seconds * sample_rate)
  n, total, squares = 0, 0.0, 0.0
  for a in range(0, x.size, block):
    f = np.asarray(frames_of(x[a:a + block]), np.float64)
    n, total, squares = n + f.shape[1], total + f.sum(1), squares + (f * f).sum(1)
  mean = total / max(n, 1)
  return mean, np.sqrt(np.maximum(squares / max(n, 1) - mean * mean, 0.0))


def track_chroma(x: np.ndarray, cqt, block_seconds: float = 60.0) -> np.ndarray:
  """Mean chroma [12] of a waveform at cqt.sample_rate."""
  import librosa
  from mt2_jax.data.cqt import cqt_magnitude
  chroma = lambda b: librosa.feature.chroma_cqt(C=cqt_magnitude(b, cqt), fmin=cqt.fmin,
                                                bins_per_octave=cqt.bins_per_octave)
  return _frame_stats(x, cqt.sample_rate, chroma, block_seconds)[0].astype(np.float32)


def track_mfcc(x: np.ndarray, sample_rate: int, n_mfcc: int = 20) -> np.ndarray:
  """MFCC stats [2 * n_mfcc]: the mean, then the deviation, of each MFCC over time."""
  import librosa
  mfcc = lambda b: librosa.feature.mfcc(y=b, sr=sample_rate, n_mfcc=n_mfcc)
  return np.concatenate(_frame_stats(x, sample_rate, mfcc)).astype(np.float32)


# -- Features, cached. ----------------------------------------------------------

def data_fingerprint(data_dir, rows) -> str:
  """Hash of the data folder's path and its files' names and sizes."""
  data_dir = pathlib.Path(data_dir).absolute()
  h = hashlib.sha256(str(data_dir).encode())
  for r in rows:
    h.update(f"{r['file']}:{(data_dir / r['file']).stat().st_size};".encode())
  return h.hexdigest()[:12]


def _load_cache(path: pathlib.Path, files: list[str]) -> dict[str, np.ndarray] | None:
  if not path.exists():
    return None
  with np.load(path) as z:
    if list(z["files"]) != files:
      return None
    return {k: z[k] for k in z.files if k != "files"}


def _save_cache(path: pathlib.Path, files: list[str], arrays: dict[str, np.ndarray]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.stem + ".tmp.npz")
  np.savez(tmp, files=np.asarray(files), **arrays)
  os.replace(tmp, path)


def extract_features(embedder: embed_lib.Embedder, data_dir, rows, cache_path=None,
                     progress: bool = True) -> dict[str, np.ndarray]:
  """Track-level features of every row: {name: [n_rows, dim]}, cached at cache_path.

  Names: embedder.feature_names plus head_<cpsd loss> ([n, 12]). A file the
  embedder rejects gets NaN features (and is left out of every task).
  """
  import tqdm
  from mt2_jax.data import audio
  files = [r["file"] for r in rows]
  cache_path = pathlib.Path(cache_path) if cache_path else None
  if cache_path is not None:
    cached = _load_cache(cache_path, files)
    if cached is not None:
      return cached
  names = list(embedder.feature_names) + [f"head_{h}" for h in embedder.cpsd_heads]
  dims = {n: (12 if n.startswith("head_") else embedder.width) for n in names}
  out = {n: np.full((len(rows), dims[n]), np.nan, np.float32) for n in names}
  for i, f in enumerate(tqdm.tqdm(files, unit="file", desc="features", disable=not progress)):
    try:
      feats = embedder.embed_file(pathlib.Path(data_dir) / f)
    except audio.AudioError as e:
      logging.warning("skipped %s: %s", f, e)
      continue
    for n in names:
      out[n][i] = feats[n]
  if cache_path is not None:
    _save_cache(cache_path, files, out)
  return out


def _extract_tracks(name: str, track_fn, dim: int, sample_rate: int, data_dir, rows, cache_path,
                    progress: bool) -> np.ndarray:
  """track_fn(waveform at sample_rate) -> [dim] of each row's audio: [n_rows, dim],
  NaN where the audio is unreadable, cached at cache_path under `name`."""
  import tqdm
  from mt2_jax.data import audio
  files = [r["file"] for r in rows]
  cache_path = pathlib.Path(cache_path) if cache_path else None
  if cache_path is not None:
    cached = _load_cache(cache_path, files)
    if cached is not None:
      return cached[name]
  out = np.full((len(rows), dim), np.nan, np.float32)
  for i, f in enumerate(tqdm.tqdm(files, unit="file", desc=name, disable=not progress)):
    try:
      out[i] = track_fn(audio.load_audio(pathlib.Path(data_dir) / f, sample_rate))
    except audio.AudioError as e:
      logging.warning("skipped %s: %s", f, e)
  if cache_path is not None:
    _save_cache(cache_path, files, {name: out})
  return out


def extract_chroma(data_dir, rows, cqt, cache_path=None, progress: bool = True) -> np.ndarray:
  """Mean chroma [n_rows, 12] of each row's audio (for kk_chroma), cached."""
  return _extract_tracks("chroma", lambda x: track_chroma(x, cqt), 12, cqt.sample_rate, data_dir,
                         rows, cache_path, progress)


def extract_mfcc(data_dir, rows, sample_rate: int, cache_path=None, progress: bool = True) -> np.ndarray:
  """MFCC stats [n_rows, 40] of each row's audio at sample_rate (track_mfcc), cached."""
  return _extract_tracks("mfcc", lambda x: track_mfcc(x, sample_rate), 40, sample_rate, data_dir,
                         rows, cache_path, progress)


def _valid(task: TaskData, arrays: Sequence[np.ndarray]) -> TaskData:
  """Drops examples whose features are NaN (files that could not be embedded)."""
  ok = np.ones(task.index.size, bool)
  for a in arrays:
    ok &= np.all(np.isfinite(a[task.index]), axis=1)
  return dataclasses.replace(task, index=task.index[ok], y=task.y[ok], split=task.split[ok])


def _usable(task: TaskData) -> bool:
  """Whether a task has train and test examples (a tiny corpus may lack some)."""
  if (task.split == "train").any() and (task.split == "test").any():
    return True
  logging.warning("task %s skipped: no train or no test examples", task.name)
  return False


# -- One model, all tasks. --------------------------------------------------------

def head_omegas(config) -> dict[str, float]:
  """{'head_<loss>': omega} of a run's CPSD losses (for the phase readout)."""
  return {f"head_{n}": l.get("omega", 7 / 12) for n, l in config.losses.items() if l.kind == "cpsd"}


def probe_features(model_name: str, features: dict[str, np.ndarray], rows, tasks: Sequence[str],
                   feature_names: Sequence[str] | None = None,
                   omegas: dict[str, float] | None = None) -> list[dict[str, Any]]:
  """Probes every feature on every task; plus the zero-shot readouts for key.

  omegas: {'head_<loss>': omega} (`head_omegas`); a head not in it: 7/12.
  Returns result rows {model, feature, task, <metric>: value, ...}.
  """
  feature_names = [n for n in (feature_names or features) if not n.startswith("head_")]
  results = []
  for task_name in tasks:
    base = task_data(task_name, rows)
    for name in feature_names:
      t = _valid(base, [features[name]])
      if not _usable(t):
        continue
      results.append({"model": model_name, "feature": name, "task": task_name,
                      **probe_feature(t, features[name])})
    if task_name == "key":
      for head in sorted(n for n in features if n.startswith("head_")):
        t = _valid(base, [features[head]])
        if not _usable(t):
          continue
        omega = (omegas or {}).get(head, 7 / 12)
        results.append({"model": model_name, "feature": f"zero-shot ({head})", "task": "key",
                        **zero_shot_key(t, features[head])})
        if round(omega * 12) in (1, 5, 7, 11):
          results.append({"model": model_name, "feature": f"zero-shot phase ({head})",
                          "task": "key", **zero_shot_key(t, features[head], "phase", omega)})
  return results


def reference_rows(data_dir, rows, cqt, cache_dir, tasks: Sequence[str],
                   progress: bool = True) -> list[dict[str, Any]]:
  """The rows without a model: 'KK chroma template' on key, 'MFCC stats' on every task.

  Audio is read at cqt.sample_rate (the model's); chroma and MFCCs are cached
  in cache_dir, keyed by the data's fingerprint.
  """
  cache_dir = pathlib.Path(cache_dir)
  fp = data_fingerprint(data_dir, rows)
  results = []
  if "key" in tasks:
    chroma = extract_chroma(data_dir, rows, cqt, cache_dir / f"chroma_{fp}.npz", progress)
    task = _valid(task_data("key", rows), [chroma])
    results.append({"model": "KK chroma template", "feature": "chroma", "task": "key",
                    **kk_key(task, chroma)})
  mfcc = extract_mfcc(data_dir, rows, cqt.sample_rate, cache_dir / f"mfcc_{fp}.npz", progress)
  return results + probe_features("MFCC stats", {"mfcc": mfcc}, rows, tasks)


def probe_run(workdir, data_dir, tasks: Sequence[str] = ("key",), step: int | None = None,
              untrained: bool = True, references: bool = True, name: str | None = None,
              embedder: embed_lib.Embedder | None = None, progress: bool = True) -> list[dict[str, Any]]:
  """All probes of one run (its latest checkpoint), features cached in the run.

  name labels the run's rows (default: the workdir's name); untrained adds
  rows for '<name> (untrained)'; references adds reference_rows.
  """
  workdir = pathlib.Path(workdir)
  name = name or workdir.name
  rows = read_examples(data_dir)
  fp = data_fingerprint(data_dir, rows)
  cache = workdir / "probe_cache"
  embedder = embedder or embed_lib.Embedder.from_run(workdir, step)
  feats = extract_features(embedder, data_dir, rows, cache / f"features_step{embedder.step}_{fp}.npz",
                           progress)
  results = probe_features(name, feats, rows, tasks, embedder.feature_names, head_omegas(embedder.config))
  if untrained:
    ref = embed_lib.Embedder.untrained(embedder.config)
    ref_feats = extract_features(ref, data_dir, rows, cache / f"features_untrained_{fp}.npz", progress)
    results += probe_features(f"{name} (untrained)", ref_feats, rows, tasks, ref.feature_names,
                              head_omegas(ref.config))
  if references:
    results += reference_rows(data_dir, rows, embedder.cqt, cache, tasks, progress)
  return results


# -- Reports. ------------------------------------------------------------------

COLUMNS = (("key", "key (MIREX)"), ("key_signature", "key signature (acc)"),
           ("instrument", "instrument (acc)"), ("chorale_instrument", "chorale instrument (acc)"),
           ("pitch", "pitch (acc)"))


def _cells(results: Sequence[dict[str, Any]]):
  """(metrics [(metric, title)] present, row keys [(model, feature)] in order,
  {row key: {metric: (score, [lo, hi] or None)}})."""
  metrics = [(m, title) for m, title in COLUMNS if any(m in r for r in results)]
  order, cells = [], {}
  for r in results:
    k = (r["model"], r["feature"])
    if k not in cells:
      order.append(k)
      cells[k] = {}
    for m, _ in metrics:
      if m in r:
        cells[k][m] = (r[m], r.get(ci_name(m)))
  return metrics, order, cells


def table(results: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
  """(header, rows) with one row per (model, feature), one column per metric
  present; a cell reads `score [lo-hi]`."""
  metrics, order, cells = _cells(results)
  fmt = lambda v, ci: f"{v:.3f}" + (f" [{ci[0]:.2f}-{ci[1]:.2f}]" if ci else "")
  header = ["model", "feature"] + [title for _, title in metrics]
  body = [[model, feat] + [fmt(*cells[(model, feat)][m]) if m in cells[(model, feat)] else ""
                           for m, _ in metrics]
          for model, feat in order]
  return header, body


def markdown(results: Sequence[dict[str, Any]]) -> str:
  header, body = table(results)
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in body]
  return "\n".join(lines) + "\n"


def plot(results: Sequence[dict[str, Any]], path) -> None:
  """One horizontal bar panel per metric, one bar per (model, feature), 95% intervals as error bars."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  metrics, order, cells = _cells(results)
  labels = [f"{m} / {f}" for m, f in order]
  colors = ["0.6" if any(s in l for s in ("untrained", "KK", "MFCC")) else f"C{i % 10}"
            for i, l in enumerate(labels)]
  fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics) + 3, 0.3 * len(order) + 1.5),
                           sharey=True, squeeze=False)
  for ax, (m, title) in zip(axes[0], metrics):
    got = [cells[k].get(m, (np.nan, None)) for k in order]
    values = np.array([v for v, _ in got])
    err = np.array([[v - ci[0], ci[1] - v] if ci else [0.0, 0.0] for v, ci in got]).T  # [2, rows]
    ax.barh(np.arange(len(order)), np.nan_to_num(values), xerr=err, color=colors,
            error_kw=dict(ecolor="0.2", elinewidth=1, capsize=2))
    ax.set_xlim(0, 1)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
  axes[0][0].set_yticks(np.arange(len(order)), labels, fontsize=8)
  axes[0][0].invert_yaxis()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def findings(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """The paper's findings, checked in kind on `mt2 demo`'s results (its model names).

  Each: {claim, a, a_label, b, b_label, holds}: the claim is a > b (a >= b
  where it says "at least as good"); holds is None where a score is missing
  (a task or model not probed). Scores are the headline metric of each task
  (MIREX for key, accuracy otherwise), point estimates.
  """
  def get(model, feature, task):
    return next((r[task] for r in results
                 if (r["model"], r["feature"], r["task"]) == (model, feature, task) and task in r), None)

  def best(models, task, exclude=()):
    """(score, 'model feature') of the best probed feature of any of models."""
    scored = [(r[task], f"{r['model']} {r['feature']}") for r in results
              if r["model"] in models and r["task"] == task and task in r and r["feature"] not in exclude]
    return max(scored, key=lambda s: s[0]) if scored else (None, " / ".join(models))  # Ties: first.

  out = []

  def check(claim, a, b, at_least=False):
    (a, a_label), (b, b_label) = a, b
    holds = None if a is None or b is None else bool(a >= b if at_least else a > b)
    out.append(dict(claim=claim, a=a, a_label=a_label, b=b, b_label=b_label, holds=holds))

  token = lambda feature, task: (get("mt2", feature, task), f"mt2 {feature}")
  eq, con = "cls_equivariant", "cls_contrastive"
  check("key: the equivariant token beats the contrastive token", token(eq, "key"), token(con, "key"))
  check("key: the equivariant token beats the untrained model's best feature", token(eq, "key"),
        best(["mt2 (untrained)"], "key"))
  check("chorale instrument: the contrastive token beats the equivariant token",
        token(con, "chorale_instrument"), token(eq, "chorale_instrument"))
  check("note instrument: the contrastive token beats the equivariant token",
        token(con, "instrument"), token(eq, "instrument"))
  tasks = ("key", "chorale_instrument", "instrument")
  for task in tasks:
    check(f"{task.replace('_', ' ')}: MT2's best feature is at least as good as both "
          "single-token models'",
          best(["mt2"], task), best(["contrastive_only", "equivariant_only"], task), at_least=True)
  # cls_mean against MT2's best other feature, on the task where it comes closest.
  pairs = {t: (token("cls_mean", t), best(["mt2"], t, exclude=("cls_mean",))) for t in tasks}
  margin = lambda t: (-np.inf if None in (pairs[t][0][0], pairs[t][1][0])
                      else pairs[t][0][0] - pairs[t][1][0])
  task = max(tasks, key=margin)
  check(f"the token average is MT2's best feature on at least one task (closest: {task})",
        *pairs[task], at_least=True)
  check("key: the equivariant token beats the KK chroma template", token(eq, "key"),
        (get("KK chroma template", "chroma", "key"), "KK chroma template"))
  check("chorale instrument: the contrastive token beats MFCC stats", token(con, "chorale_instrument"),
        (get("MFCC stats", "mfcc", "chorale_instrument"), "MFCC stats"))
  return out


def findings_markdown(items: Sequence[dict[str, Any]]) -> str:
  """A Markdown list, a line per finding: yes / no / n/a, claim, the two scores."""
  num = lambda v: "n/a" if v is None else f"{v:.3f}"
  lines = ["## Findings (the paper's, in kind, on point scores)", ""]
  lines += [f"- **{'n/a' if f['holds'] is None else 'yes' if f['holds'] else 'no'}** {f['claim']}: "
            f"{num(f['a'])} ({f['a_label']}) vs {num(f['b'])} ({f['b_label']})" for f in items]
  return "\n".join(lines) + "\n"


def write_report(results: Sequence[dict[str, Any]], out_dir, with_findings: bool = False) -> dict[str, str]:
  """results.json, results.md (findings below the table if asked) and probe.png
  in out_dir; returns their paths."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md",
           "chart": out_dir / "probe.png"}
  paths["json"].write_text(json.dumps(list(results), indent=1))
  notes = "\n" + findings_markdown(findings(results)) if with_findings else ""
  paths["markdown"].write_text(markdown(results) + notes)
  plot(results, paths["chart"])
  return {k: str(v) for k, v in paths.items()}


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for name in ("workdir", "data"):
    if not FLAGS[name].value:
      raise app.UsageError(f"--{name} is required: mt2 probe --workdir=RUN --data DIR --task key")
  tasks = list(FLAGS.task)
  for t in tasks:
    if t not in TASKS:
      raise app.UsageError(f"--task: unknown {t!r}; known: {', '.join(TASKS)}")
  results = probe_run(FLAGS.workdir, FLAGS.data, tasks, step=FLAGS.step, untrained=FLAGS.untrained)
  paths = write_report(results, FLAGS.out or pathlib.Path(FLAGS.workdir) / "probe")
  print(markdown(results))
  print(f"results: {paths['markdown']}, {paths['json']}; chart: {paths['chart']}")


__all__ = [
    "read_examples", "task_data", "TaskData", "fit_linear_probe", "probe_feature", "score",
    "track_scores", "bootstrap_ci", "ci_name", "summarize", "zero_shot_key", "kk_key_scores",
    "kk_key", "track_chroma", "track_mfcc", "extract_features", "extract_chroma", "extract_mfcc",
    "probe_features", "reference_rows", "probe_run", "markdown", "plot", "findings",
    "findings_markdown", "write_report", "key_class", "key_name", "key_signature", "TASKS",
]
