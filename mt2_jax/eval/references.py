"""Reference readouts and features beside the linear probes (docs/design.md §1.6).

  zero_shot_key  the equivariant head (STONE) as a key-signature estimator:
                 its window-averaged profile read by argmax (or by phase on
                 CPSD's circle, mt2_jax.keys), plus one rotation fitted on the
                 training split. A key signature only: scored as key-signature
                 accuracy.
  kk_key         the classic template estimator, no training: a track's mean
                 chroma correlated with the 24 rotations of the
                 Krumhansl-Kessler profiles; scored like the key probes.
  track_chroma   mean chroma of a waveform (librosa `chroma_cqt` of the model
                 front-end's CQT, A0 upwards): what kk_key reads.
  track_mfcc     MFCC stats: 20 MFCCs, mean and deviation over the track (40
                 dims), probed like the model's features: plain timbre.
  track_cqt_stats  the model's own input summarised the same way: mean and
                 deviation of each log-CQT bin over the track (2 x 99 dims).
                 What a probe can read from the input without learning
                 (docs/experiments.md, session 14).
"""

from typing import Any

import numpy as np

from mt2_jax import keys
from mt2_jax.eval.tasks import TaskData, score, summarize

# Krumhansl & Kessler (1982) probe-tone profiles, tonic first.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


# -- Readouts without a probe. ----------------------------------------------------

def zero_shot_key(task: TaskData, profiles: np.ndarray, readout: str = "argmax",
                  omega: float = 7 / 12) -> dict[str, Any]:
  """The head as a key-signature estimator, + one rotation fit on train.

  readout: one of keys.ZERO_SHOT_READOUTS ('argmax': STONE's, rotated by one
  of 12 classes; 'phase': the angle of z on CPSD's circle at omega, turned by
  a real angle; keys.fit_rotation). profiles: [n_rows, 12]. Returns
  {'key_signature': test accuracy, its interval, 'rotation'}.
  """
  x = profiles[task.index]
  sig = np.array([keys.key_signature(int(c)) for c in task.y])
  train, test = task.split == "train", task.split == "test"
  r = keys.fit_rotation(x[train], sig[train], readout, omega)
  hits = keys.read_signatures(x[test], r, readout, omega) == sig[test]
  return {**summarize({"key_signature": hits}, task.index[test]),
          "rotation": round(r, 3), "n_train": int(train.sum()), "n_test": int(test.sum())}


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
  """The KK template estimator scored on the test split (no training); chroma [n_rows, 12]."""
  test = task.split == "test"
  pred = kk_key_scores(chroma[task.index[test]]).argmax(1)
  return {**score("key", task.y[test], pred, task.index[test]), "n_test": int(test.sum())}


# -- Track features of the references. ---------------------------------------------

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
  """Mean chroma [12] of a waveform [samples] at cqt.sample_rate."""
  import librosa
  from mt2_jax.data.cqt import cqt_magnitude
  chroma = lambda b: librosa.feature.chroma_cqt(C=cqt_magnitude(b, cqt), fmin=cqt.fmin,
                                                bins_per_octave=cqt.bins_per_octave)
  return _frame_stats(x, cqt.sample_rate, chroma, block_seconds)[0].astype(np.float32)


def track_mfcc(x: np.ndarray, sample_rate: int, n_mfcc: int = 20) -> np.ndarray:
  """MFCC stats [2 * n_mfcc] of a waveform [samples]: the mean, then the deviation,
  of each MFCC over time."""
  import librosa
  mfcc = lambda b: librosa.feature.mfcc(y=b, sr=sample_rate, n_mfcc=n_mfcc)
  return np.concatenate(_frame_stats(x, sample_rate, mfcc)).astype(np.float32)


def track_cqt_stats(x: np.ndarray, cqt) -> np.ndarray:
  """CQT stats [2 * cqt.n_bins] of a waveform [samples] at cqt.sample_rate: the
  mean, then the deviation, of each log-CQT bin (the model's front-end) over time."""
  from mt2_jax.data.cqt import log_cqt
  return np.concatenate(_frame_stats(x, cqt.sample_rate, lambda b: log_cqt(b, cqt))).astype(np.float32)


__all__ = ["KK_MAJOR", "KK_MINOR", "kk_key", "kk_key_scores", "track_chroma", "track_cqt_stats",
           "track_mfcc", "zero_shot_key"]
