"""Track-level features of a labelled folder, cached: a run's embeddings, chroma, MFCC and CQT stats.

Every array is [n_rows, dim] in the order of the rows (tasks.read_examples),
NaN where a file could not be read (tasks.valid_rows then leaves it out of
every task). Caches are .npz files that also hold the list of files they were
computed from; a cache whose list differs is ignored and overwritten. Callers
key the file names by `data_fingerprint` (and the checkpoint step), so probing
again, or on another task, does not embed again.
"""

import hashlib

from absl import logging
import numpy as np

from mt2_jax import storage
from mt2_jax.eval import references


def data_fingerprint(data_dir, rows) -> str:
  """Hash of the data folder's path and its files' names and sizes."""
  data_dir = storage.path(data_dir)
  h = hashlib.sha256(str(data_dir).encode())
  for r in rows:
    h.update(f"{r['file']}:{(data_dir / r['file']).stat().length};".encode())
  return h.hexdigest()[:12]


def _load_cache(path, files: list[str]) -> dict[str, np.ndarray] | None:
  if not path.exists():
    return None
  z = storage.load_npz(path)
  if list(z.pop("files")) != files:
    return None
  return z


def _save_cache(path, files: list[str], arrays: dict[str, np.ndarray]) -> None:
  # Atomic (storage.save_npz): an interrupted write leaves no half cache.
  storage.save_npz(path, files=np.asarray(files), **arrays)


def extract_features(embedder, data_dir, rows, cache_path=None,
                     progress: bool = True) -> dict[str, np.ndarray]:
  """Track-level features of every row: {name: [n_rows, dim]}, cached at cache_path.

  embedder: an mt2_jax.eval.embed.Embedder. Names: embedder.feature_names plus
  head_<cpsd loss> ([n, 12]). A file the embedder rejects gets NaN features
  (and is left out of every task).
  """
  return extract_features_many([(embedder, cache_path)], data_dir, rows, progress)[0]


def extract_features_many(jobs, data_dir, rows, progress: bool = True) -> list[dict[str, np.ndarray]]:
  """extract_features of several (embedder, cache_path) jobs, reading each file once.

  Jobs whose cache is valid are loaded; the rest embed every file together
  (embed.embed_many: one CQT per file for all of them), grouped by windowing.
  """
  import tqdm
  from mt2_jax.data import audio
  from mt2_jax.eval import embed
  files = [r["file"] for r in rows]
  results = [None] * len(jobs)
  todo: dict[tuple, list[int]] = {}
  for j, (embedder, cache_path) in enumerate(jobs):
    cached = _load_cache(storage.path(cache_path), files) if cache_path else None
    if cached is not None:
      results[j] = cached
    else:
      todo.setdefault(embedder.windowing, []).append(j)
  for group in todo.values():
    embedders = [jobs[j][0] for j in group]
    outs = []
    for e in embedders:
      names = list(e.feature_names) + [f"head_{h}" for h in e.cpsd_heads]
      outs.append({n: np.full((len(rows), 12 if n.startswith("head_") else e.width), np.nan, np.float32)
                   for n in names})
    for i, f in enumerate(tqdm.tqdm(files, unit="file", disable=not progress,
                                    desc=f"features ({len(group)} model{'s' * (len(group) > 1)})")):
      try:
        x = audio.load_audio(storage.path(data_dir) / f, embedders[0].sample_rate)
        feats = embed.embed_many(embedders, x, embedders[0].sample_rate, tokens=False)
      except audio.AudioError as e:
        logging.warning("skipped %s: %s", f, e)
        continue
      for out, feat in zip(outs, feats):
        for n in out:
          out[n][i] = feat[n]
    for j, out in zip(group, outs):
      if jobs[j][1]:
        _save_cache(storage.path(jobs[j][1]), files, out)
      results[j] = out
  return results


def _extract_tracks(name: str, track_fn, dim: int, sample_rate: int, data_dir, rows, cache_path,
                    progress: bool) -> np.ndarray:
  """track_fn(waveform at sample_rate) -> [dim] of each row's audio: [n_rows, dim],
  NaN where the audio is unreadable, cached at cache_path under `name`."""
  import tqdm
  from mt2_jax.data import audio
  files = [r["file"] for r in rows]
  cache_path = storage.path(cache_path) if cache_path else None
  if cache_path is not None:
    cached = _load_cache(cache_path, files)
    if cached is not None:
      return cached[name]
  out = np.full((len(rows), dim), np.nan, np.float32)
  for i, f in enumerate(tqdm.tqdm(files, unit="file", desc=name, disable=not progress)):
    try:
      out[i] = track_fn(audio.load_audio(storage.path(data_dir) / f, sample_rate))
    except audio.AudioError as e:
      logging.warning("skipped %s: %s", f, e)
  if cache_path is not None:
    _save_cache(cache_path, files, {name: out})
  return out


def extract_chroma(data_dir, rows, cqt, cache_path=None, progress: bool = True) -> np.ndarray:
  """Mean chroma [n_rows, 12] of each row's audio (references.track_chroma, for kk_key), cached."""
  return _extract_tracks("chroma", lambda x: references.track_chroma(x, cqt), 12, cqt.sample_rate,
                         data_dir, rows, cache_path, progress)


def extract_mfcc(data_dir, rows, sample_rate: int, cache_path=None, progress: bool = True) -> np.ndarray:
  """MFCC stats [n_rows, 40] of each row's audio at sample_rate (references.track_mfcc), cached."""
  return _extract_tracks("mfcc", lambda x: references.track_mfcc(x, sample_rate), 40, sample_rate,
                         data_dir, rows, cache_path, progress)


def extract_cqt_stats(data_dir, rows, cqt, cache_path=None, progress: bool = True) -> np.ndarray:
  """CQT stats [n_rows, 2 * cqt.n_bins] of each row's audio (references.track_cqt_stats), cached."""
  return _extract_tracks("cqt_stats", lambda x: references.track_cqt_stats(x, cqt), 2 * cqt.n_bins,
                         cqt.sample_rate, data_dir, rows, cache_path, progress)


__all__ = ["data_fingerprint", "extract_chroma", "extract_cqt_stats", "extract_features",
           "extract_features_many", "extract_mfcc"]
