"""Reading audio files robustly: any common format and rate -> mono float32.

Every failure is an `AudioError` whose message is the reason a user reads in
`rejected.csv`; callers skip the file and go on.
"""

import io
import os
import pathlib

from etils import epath
import numpy as np

from mt2_jax import storage

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus", ".m4a")


class AudioError(ValueError):
  """An audio file that cannot be used; the message says why."""


def find_audio(root) -> tuple[list[epath.Path], list[tuple[str, str]]]:
  """(audio files under `root` sorted by path, [(entry, reason)] for unreadable entries).

  `root` is a local folder or a bucket URL (mt2_jax/storage.py). An entry that
  cannot be read, such as a dangling symlink, is returned with its reason so
  the caller reports it like any bad file.
  """
  files, bad = storage.list_files(root, "audio folder")
  return [f for f in files if is_audio(f)], bad


def is_audio(p) -> bool:
  return os.path.splitext(os.fspath(p))[1].lower() in AUDIO_EXTENSIONS


def to_mono(x: np.ndarray) -> np.ndarray:
  """[n] or [n, channels] -> [n] by averaging channels."""
  x = np.asarray(x, np.float32)
  return x.mean(axis=1) if x.ndim == 2 else x


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
  if sr_in == sr_out:
    return x
  import librosa
  return librosa.resample(x, orig_sr=sr_in, target_sr=sr_out, res_type="soxr_hq").astype(np.float32)


def check_waveform(x: np.ndarray, sample_rate: int, min_seconds: float) -> np.ndarray:
  """Validates a mono waveform and peak-normalises it (docs/design.md §1.1)."""
  if x.size == 0:
    raise AudioError("empty: no samples")
  if not np.all(np.isfinite(x)):
    raise AudioError("non-finite samples (NaN or inf)")
  seconds = x.size / sample_rate
  if seconds < min_seconds:
    raise AudioError(f"too short: {seconds:.2f} s < {min_seconds:g} s")
  peak = float(np.max(np.abs(x)))
  if peak < 1e-6:
    raise AudioError("silent: peak amplitude below 1e-6")
  return (x / peak).astype(np.float32)


def load_audio(path: str | pathlib.Path | epath.Path, sample_rate: int = 22050,
               min_seconds: float = 0.0) -> np.ndarray:
  """Reads, downmixes, resamples and peak-normalises: -> [n] float32 in [-1, 1]."""
  import soundfile as sf
  if not storage.is_local(path):  # A bucket object: decode it from memory.
    try:
      path = io.BytesIO(storage.path(path).read_bytes())
    except OSError as e:
      raise AudioError(f"unreadable: {type(e).__name__}: {e}") from None
  else:
    path = str(path)
  try:
    x, sr = sf.read(path, dtype="float32", always_2d=False)
  except Exception as e:  # libsndfile cannot read it: try audioread (mp3, m4a).
    if isinstance(path, io.BytesIO):
      path.seek(0)
    try:
      import warnings
      import librosa
      with warnings.catch_warnings():  # librosa warns about its own fallback.
        warnings.simplefilter("ignore")
        x, sr = librosa.load(path, sr=None, mono=False)
      x = x.T
    except Exception:
      raise AudioError(f"unreadable: {type(e).__name__}: {e}".strip()) from None
  x = to_mono(x)
  if x.size and np.all(np.isfinite(x)):
    x = resample(x, int(sr), sample_rate)
  return check_waveform(x, sample_rate, min_seconds)
