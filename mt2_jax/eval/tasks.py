"""The probe tasks: labelled rows, each task's examples and splits, and its scores.

A labelled audio folder has labels.csv beside the audio, as `mt2 corpus`
writes it (columns `file`, `split`, `key`, `instrument`, `pitch`, `set`). Its
`split` column decides: train fits a probe, validation stops it early, test
alone is scored. The tasks (which rows, which label) are listed in
mt2_jax/eval/probe.py's docstring.

Scores are means over test tracks of a per-track score (MIREX weighted score,
key-signature hit, hit), each with a 95% confidence interval from 1000
bootstrap resamples of the test tracks (seeded, so reruns agree).
"""

import dataclasses
import posixpath
from typing import Any, Sequence

from absl import logging
import numpy as np

from mt2_jax import storage
from mt2_jax.data.dataset import SPLITS  # Their one home (what `mt2 prepare` writes).
from mt2_jax.keys import key_class, key_name, key_signature

TASKS = ("key", "instrument", "chorale_instrument", "pitch")


# -- Labels. ----------------------------------------------------------------

def read_examples(data_dir) -> list[dict[str, str]]:
  """Rows of every labels.csv under data_dir, `file` made relative to data_dir.

  Rows whose audio file is missing are dropped. Sorted by file.
  """
  data_dir = storage.path(data_dir)
  files, unreadable = storage.list_files(data_dir, "labelled audio folder")
  for entry, reason in unreadable:
    logging.warning("skipped %s: %s", entry, reason)
  present = {storage.relative(f, data_dir) for f in files}
  rows = []
  for csv_path in [f for f in files if f.name == "labels.csv"]:
    base = posixpath.dirname(storage.relative(csv_path, data_dir))
    for row in storage.read_csv(csv_path):
      row = dict(row)
      row["file"] = posixpath.normpath(posixpath.join(base, row["file"]))
      if row["file"] in present:
        rows.append(row)
  if not rows:
    raise FileNotFoundError(f"no labelled audio under {data_dir} (labels.csv with a `file` column)")
  return sorted(rows, key=lambda r: r["file"])


@dataclasses.dataclass
class TaskData:
  """One task's examples: indices into the rows, class ids, splits, class names."""
  name: str
  index: np.ndarray    # int [n]
  y: np.ndarray        # int [n]
  split: np.ndarray    # str [n]
  classes: list[str]


def task_data(task: str, rows: Sequence[dict[str, str]]) -> TaskData:
  """Selects a task's rows and labels (mt2_jax/eval/probe.py's docstring)."""
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


def valid_rows(task: TaskData, arrays: Sequence[np.ndarray]) -> TaskData:
  """Drops examples whose features are NaN (files that could not be embedded).

  arrays: features [n_rows, d] each, indexed like the rows the task was made of.
  """
  ok = np.ones(task.index.size, bool)
  for a in arrays:
    ok &= np.all(np.isfinite(a[task.index]), axis=1)
  return dataclasses.replace(task, index=task.index[ok], y=task.y[ok], split=task.split[ok])


def usable(task: TaskData) -> bool:
  """Whether a task has train and test examples (a tiny corpus may lack some); logs when not."""
  if (task.split == "train").any() and (task.split == "test").any():
    return True
  logging.warning("task %s skipped: no train or no test examples", task.name)
  return False


# -- Scores. ------------------------------------------------------------------

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


def summarize(per_track: dict[str, np.ndarray], tracks: np.ndarray | None = None) -> dict[str, Any]:
  """{metric: mean, ci_name(metric): bootstrap_ci} of per-track scores; {} without tracks.

  tracks: the test tracks' row indices [n] (as TaskData.index), given for
  rows that findings compare track by track: then the result also holds
  'tracks' and 'per_track' {metric: [n] scores} (report.paired_difference).
  """
  out = {}
  for metric, values in per_track.items():
    if len(values):
      out[metric], out[ci_name(metric)] = float(np.mean(values)), bootstrap_ci(values)
  if tracks is not None and out:
    out["tracks"] = [int(t) for t in tracks]
    out["per_track"] = {m: [float(v) for v in values] for m, values in per_track.items()}
  return out


# mir_eval.key.weighted_score's value for each kind of answer.
KEY_ERRORS = {1.0: "correct", 0.5: "fifth", 0.3: "relative", 0.2: "parallel", 0.0: "other"}


def score(task: str, y_true: np.ndarray, y_pred: np.ndarray,
          tracks: np.ndarray | None = None) -> dict[str, Any]:
  """Test-set scores of track_scores, each with its 95% interval; {} without tracks.

  For key also 'key_errors': how many test tracks got each kind of answer
  (KEY_ERRORS: correct, fifth, relative, parallel, other), which tells a
  feature that knows the key signature but not the mode (relative errors)
  from one that is lost. tracks: see summarize.
  """
  per_track = track_scores(task, y_true, y_pred)
  out = summarize(per_track, tracks)
  if task == "key" and len(y_true):
    kinds = [KEY_ERRORS[round(float(v), 1)] for v in per_track["key"]]
    out["key_errors"] = {k: kinds.count(k) for k in KEY_ERRORS.values()}
  return out


__all__ = ["KEY_ERRORS", "SPLITS", "TASKS", "TaskData", "bootstrap_ci", "ci_name", "read_examples",
           "score", "summarize", "task_data", "track_scores", "usable", "valid_rows"]
