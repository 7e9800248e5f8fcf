"""The HEAR 2021 API (hearbenchmark.com) over a trained MT2 run.

  from mt2_jax.eval import hear
  model = hear.load_model("runs/mt2")             # a run workdir
  scene = hear.get_scene_embeddings(audio, model)  # [n_sounds, d]
  emb, ts = hear.get_timestamp_embeddings(audio, model)  # [n, T, d], [n, T] ms

`audio` is [n_sounds, n_samples] float at `model.sample_rate` (22 050 Hz for
the paper's front-end), a numpy array or a torch tensor; results come back as
the same kind (torch tensors for torch input, as HEAR's harness expects).

Which features:
  scene embedding      `cls_mean`, the average of the class tokens, averaged
                       over the sound's windows: the paper's best general
                       feature (d = model width).
  timestamp embedding  the sequence token of every CQT frame (d), one per hop
                       (512 samples, about 23 ms), timestamps at the frame
                       centres in milliseconds.
Sounds are embedded one at a time in windows of the training segment length
(mt2_jax.eval.embed), so any clip length works and memory stays bounded; silent
clips are embedded without peak normalisation instead of failing.
"""

import numpy as np

from mt2_jax.eval import embed as embed_lib

SCENE_FEATURE = "cls_mean"


class HearModel:
  """What HEAR's `load_model` returns: an Embedder plus the attributes HEAR reads."""

  def __init__(self, embedder: embed_lib.Embedder):
    self.embedder = embedder
    self.sample_rate = embedder.sample_rate
    self.scene_embedding_size = embedder.width
    self.timestamp_embedding_size = embedder.width


def load_model(model_file_path: str = "", **kwargs) -> HearModel:
  """model_file_path: a training run's workdir; kwargs go to Embedder (e.g. dtype='float32')."""
  if not model_file_path:
    raise ValueError("load_model needs a training run folder (mt2 train --workdir=...)")
  return HearModel(embed_lib.Embedder.from_run(model_file_path, **kwargs))


def _to_numpy(audio) -> tuple[np.ndarray, bool]:
  is_torch = type(audio).__module__.startswith("torch")
  x = audio.detach().cpu().numpy() if is_torch else np.asarray(audio)
  if x.ndim != 2:
    raise ValueError(f"audio must be [n_sounds, n_samples], got shape {x.shape}")
  return x.astype(np.float32, copy=False), is_torch


def _like(x: np.ndarray, is_torch: bool):
  if is_torch:
    import torch
    return torch.from_numpy(np.ascontiguousarray(x))
  return x


def _embed_all(audio, model: HearModel, tokens: bool):
  x, is_torch = _to_numpy(audio)
  outs = [model.embedder.embed(sound, model.sample_rate, tokens=tokens, allow_silence=True)
          for sound in x]
  return outs, is_torch


def get_scene_embeddings(audio, model: HearModel):
  """[n_sounds, n_samples] -> [n_sounds, scene_embedding_size] (cls_mean over windows)."""
  outs, is_torch = _embed_all(audio, model, tokens=False)
  emb = np.stack([o[SCENE_FEATURE] for o in outs]) if outs else np.zeros(
      (0, model.scene_embedding_size), np.float32)
  return _like(emb, is_torch)


def get_timestamp_embeddings(audio, model: HearModel):
  """[n_sounds, n_samples] -> (embeddings [n_sounds, T, d], timestamps [n_sounds, T] in ms).

  T = n_samples // hop + 1 frames at the model's rate (the same for every
  sound, since HEAR passes equal-length clips).
  """
  outs, is_torch = _embed_all(audio, model, tokens=True)
  if not outs:
    empty = np.zeros((0, 0, model.timestamp_embedding_size), np.float32)
    return _like(empty, is_torch), _like(np.zeros((0, 0), np.float32), is_torch)
  emb = np.stack([o["tokens"] for o in outs])
  ts = np.stack([o["token_timestamps"] * 1000.0 for o in outs]).astype(np.float32)
  return _like(emb, is_torch), _like(ts, is_torch)


__all__ = ["HearModel", "load_model", "get_scene_embeddings", "get_timestamp_embeddings"]
