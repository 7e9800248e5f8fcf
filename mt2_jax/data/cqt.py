"""The CQT front-end (docs/design.md §1.1): waveform -> log-compressed CQT magnitude.

Matches STONE's front-end: librosa CQT magnitude from A0 (27.5 Hz), 99 bins at
12 bins/octave, hop 512 at 22 050 Hz (about 43 frames/s), then
`db = 10*log10(max(|C|, 1e-10))`, clamped at `max(db) - 80` per example, then
`x = db/80 + 1`, so every example spans at most one unit (80 dB) and a
full-scale bin lands near 1.
"""

import dataclasses
import hashlib
import json
from typing import Any, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class CQTConfig:
  """Parameters that define the stored CQT; a dataset is tied to them."""
  sample_rate: int = 22050
  fmin: float = 27.5
  n_bins: int = 99
  bins_per_octave: int = 12
  hop_length: int = 512
  top_db: float = 80.0

  @classmethod
  def from_mapping(cls, m: Mapping[str, Any]) -> "CQTConfig":
    """From a config section (ConfigDict or dict); unknown keys are an error."""
    m = dict(m)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(m) - names)
    if unknown:
      raise ValueError(f"cqt: unknown parameter(s) {unknown}; known: {sorted(names)}")
    return cls(**m)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def fingerprint(self) -> str:
    """A short hash of the parameters, stored in the dataset metadata."""
    blob = json.dumps(self.to_dict(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

  @property
  def frames_per_second(self) -> float:
    return self.sample_rate / self.hop_length

  def num_frames(self, num_samples: int) -> int:
    """Frames librosa returns for `num_samples` samples (centred frames)."""
    return num_samples // self.hop_length + 1

  def bin_frequencies(self) -> np.ndarray:
    """[n_bins] centre frequencies in Hz; bin k is fmin * 2**(k / bins_per_octave)."""
    return self.fmin * 2.0 ** (np.arange(self.n_bins) / self.bins_per_octave)


def cqt_magnitude(waveform: np.ndarray, cfg: CQTConfig = CQTConfig()) -> np.ndarray:
  """|CQT| of a mono waveform at `cfg.sample_rate`: [n_samples] -> [n_bins, T] float32."""
  import librosa  # Imported here: it is slow to import and only prepare needs it.
  c = librosa.cqt(
      np.asarray(waveform, np.float32), sr=cfg.sample_rate, hop_length=cfg.hop_length,
      fmin=cfg.fmin, n_bins=cfg.n_bins, bins_per_octave=cfg.bins_per_octave)
  return np.abs(c).astype(np.float32)


def log_compress(magnitude: np.ndarray, top_db: float = 80.0) -> np.ndarray:
  """STONE's log scaling of one example: [F, T] magnitude -> [F, T], range <= 1."""
  db = 10.0 * np.log10(np.maximum(magnitude, 1e-10))
  db = np.maximum(db, db.max() - top_db)
  return (db / top_db + 1.0).astype(np.float32)


def warm_numba_cache(cfg: CQTConfig = CQTConfig()) -> None:
  """Runs one small CQT here before this process starts workers that run CQTs.

  librosa's submodules load lazily, and numba compiles their gufuncs as they
  load, caching them next to librosa (or in NUMBA_CACHE_DIR). Workers that do
  that first at the same time can write a gufunc's two cache files from
  different compilations, after which the gufunc segfaults in every later
  process of that environment (numba#10128; a fresh install's first
  `mt2 prepare --num_workers 2` did it one time in three here). Loading them
  once in the parent writes a whole cache that the workers then only read.

  The signal is as long as the lowest octave's FFT (`min_samples`): a shorter
  one makes librosa warn "n_fft=... is too large for input signal" about a
  zero-padded lowest octave, which here is only a warm-up's artefact.
  """
  log_cqt(np.zeros(min_samples(cfg), np.float32), cfg)


def min_samples(cfg: CQTConfig = CQTConfig()) -> int:
  """Shortest waveform whose every CQT bin is computed from signal, not zero padding.

  librosa computes each octave with an FFT as long as its longest filter
  (rounded up to a power of 2), at that octave's rate; counted in samples at
  the full rate, the lowest octave's is the longest: 16384 (0.74 s) by
  default. A shorter input makes librosa warn that n_fft is too large for the
  signal.
  """
  import librosa  # pylint: disable=g-import-not-at-top
  lengths, _ = librosa.filters.wavelet_lengths(freqs=cfg.bin_frequencies(), sr=cfg.sample_rate)
  return int(2 ** np.ceil(np.log2(lengths.max())))


def log_cqt(waveform: np.ndarray, cfg: CQTConfig = CQTConfig()) -> np.ndarray:
  """Waveform at `cfg.sample_rate` -> log-compressed CQT [n_bins, T] float32."""
  return log_compress(cqt_magnitude(waveform, cfg), cfg.top_db)
