"""Embeddings from a trained run: any waveform -> named features (docs/design.md §1.6).

  mt2 embed --workdir=RUN --audio DIR --out OUT [--tokens]   # embed_folder (mt2_jax/cli/embed.py)

Python:

  from mt2_jax.eval import embed
  embedder = embed.load("runs/mt2")             # or embed.Embedder.from_run(...)
  out = embedder.embed(waveform, sample_rate)   # numpy audio, any rate and length

How audio becomes windows. The waveform is resampled to the model's rate
(config.cqt.sample_rate) and peak-normalised, as in training. Its CQT frame
grid (frame f centred on sample f * hop) is cut into windows of W =
config.data.segment_frames frames: [0, W), [W, 2W), ..., and, when the frames
do not divide evenly, one last window aligned to the end, [F - W, F), so
every frame is seen and every window has W frames. Audio shorter than one
window gives a single window of all its F < W frames.

Memory is bounded whatever the length: windows are processed in blocks of
`block_windows`; the CQT of a block is computed from the block's audio plus
`margin_frames` frames of context on each side (32 frames make it equal to the
whole file's CQT to about 1e-4 of the log scale), and only the per-window
outputs are kept. Beyond the waveform itself, an hour costs what a minute does.
Each window is log-compressed on its own (STONE's per-example 80 dB floor).

`Embedder.embed` returns a dict of numpy float32 arrays (d = model width):
  <f>                [d]        f in cls_<token>..., cls_mean, tokens_mean:
                                the average over windows (global features)
  <f>_windows        [n, d]     the same per window
  head_<loss>        [12]       equivariant (cpsd) heads only: the key-signature
  head_<loss>_windows [n, 12]   profile, averaged / per window (zero-shot key)
  timestamps         [n]        window centres in seconds
  tokens             [F, d]     (tokens=True) one sequence token per CQT frame
  token_timestamps   [F]        (tokens=True) frame centres in seconds
Where windows overlap (the end-aligned last one) each frame's token comes from
the earlier window.
"""

import posixpath
from typing import Iterator

from absl import logging
import numpy as np

from mt2_jax import storage
from mt2_jax.data.cqt import CQTConfig, cqt_magnitude, log_compress

GLOBAL_FEATURES = ("cls_mean", "tokens_mean")  # Plus one cls_<token> per class token.


def _abs_max(x: np.ndarray, chunk: int = 1 << 20) -> float:
  """max |x| without a full-size temporary."""
  return max((float(np.max(np.abs(x[i:i + chunk]))) for i in range(0, x.size, chunk)), default=0.0)


def window_starts(num_frames: int, window: int) -> np.ndarray:
  """Start frames of the windows covering [0, num_frames) (module docstring). -> int [n]."""
  if num_frames <= window:
    return np.zeros(1, np.int64)
  starts = np.arange(0, num_frames - window + 1, window)
  if starts[-1] + window < num_frames:
    starts = np.append(starts, num_frames - window)
  return starts


class Embedder:
  """A model and its parameters, ready to embed audio on this host's devices.

  Each block of windows is split over all local devices (several GPUs, or the
  per-core CPU devices of `host.use_cpu_cores`), parameters replicated.
  """

  def __init__(self, config, params, step: int | None = None, block_windows: int = 16,
               margin_frames: int = 32, dtype: str | None = None):
    """config: a run's ConfigDict; params: the model's float32 'params' tree.

    dtype overrides config.model.dtype for the activations (e.g. 'float32' to
    embed a bfloat16-trained model on a CPU, where bfloat16 is emulated).
    """
    import jax
    from mt2_jax import model as model_lib
    if dtype is not None:
      config = config.copy_and_resolve_references()
      config.model.dtype = dtype
    self.config = config
    self.step = step
    self.cqt = CQTConfig.from_mapping(config.cqt)
    self.window = int(config.data.segment_frames)
    self.crop_bins = int(config.data.crop_bins)
    self.block_windows = int(block_windows)
    self.margin_frames = int(margin_frames)
    self.class_tokens = tuple(config.model.class_tokens)
    self.cpsd_heads = tuple(sorted(n for n, l in config.losses.items() if l.kind == "cpsd"))
    self.model = model_lib.build_model(config)
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), ("data",))
    self._rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    self.params = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    self.width = model_lib.model_dims(config)["width"]

    def apply(params, x):
      out = self.model.apply({"params": params}, x)
      keep = [f"cls_{t}" for t in self.class_tokens] + list(GLOBAL_FEATURES) + ["tokens"]
      keep += [f"head_{h}" for h in self.cpsd_heads]
      return {k: out[k].astype(jax.numpy.float32) for k in keep}
    self._apply = jax.jit(apply)

  @classmethod
  def from_run(cls, workdir, step: int | None = None, **kwargs) -> "Embedder":
    """The run's latest (or given) checkpoint; kwargs go to __init__."""
    from mt2_jax.train import checkpoint
    config, params, step = checkpoint.load_run(workdir, step)
    return cls(config, params, step=step, **kwargs)

  @classmethod
  def untrained(cls, config, seed: int | None = None, **kwargs) -> "Embedder":
    """A randomly initialised model of the same config: the reference for probes."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from mt2_jax import model as model_lib
    seed = config.seed if seed is None else seed
    x = jnp.zeros((1, config.data.crop_bins, config.data.segment_frames), jnp.float32)
    # As create_train_state: the init key is the first half of PRNGKey(seed).
    init_key, _ = jax.random.split(jax.random.PRNGKey(seed))
    params = nn.unbox(model_lib.build_model(config).init(init_key, x))["params"]
    return cls(config, params, step=0, **kwargs)

  # -- Properties a caller (HEAR, probes) needs. ------------------------------

  @property
  def sample_rate(self) -> int:
    return self.cqt.sample_rate

  @property
  def frame_seconds(self) -> float:
    return self.cqt.hop_length / self.cqt.sample_rate

  @property
  def feature_names(self) -> tuple[str, ...]:
    """Global features, in a fixed order: each class token, cls_mean, tokens_mean."""
    return tuple(f"cls_{t}" for t in self.class_tokens) + GLOBAL_FEATURES

  # -- The pieces. ------------------------------------------------------------

  def apply_windows(self, specs: np.ndarray) -> dict[str, np.ndarray]:
    """Model on CQT windows: [n, crop_bins, T] -> dict of per-window arrays.

    The batch is padded to a power of two (at most block_windows), then to a
    multiple of the device count, so that only a handful of shapes are ever
    compiled.
    """
    import jax
    n = specs.shape[0]
    size = 1
    while size < n:
      size *= 2
    devices = self._rows.mesh.size
    size = -(-size // devices) * devices
    if size > n:
      specs = np.concatenate([specs, np.zeros((size - n,) + specs.shape[1:], specs.dtype)])
    out = self._apply(self.params, jax.device_put(specs, self._rows))
    return {k: np.asarray(v[:n]) for k, v in out.items()}

  def cqt_blocks(self, x: np.ndarray, scale: float = 1.0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Log-CQT windows of a waveform at the model's rate, a block at a time.

    Yields (starts int [m], specs float32 [m, crop_bins, T]) with m <=
    block_windows; `scale` multiplies the audio (peak normalisation) one block
    at a time, so no full-length copy is ever made.
    """
    hop = self.cqt.hop_length
    num_frames = self.cqt.num_frames(x.size)
    starts = window_starts(num_frames, self.window)
    length = min(self.window, num_frames)
    margin = self.margin_frames * hop
    for b in range(0, starts.size, self.block_windows):
      block = starts[b:b + self.block_windows]
      f0, f1 = int(block[0]), int(block[-1]) + length  # Frames [f0, f1) of the file.
      a = max(0, f0 * hop - margin)  # A multiple of hop: frames stay on the file's grid.
      z = min(x.size, (f1 - 1) * hop + margin + 1)
      mag = cqt_magnitude(x[a:z] * np.float32(scale), self.cqt)  # [n_bins, ~f1 - f0 + 2 margin]
      offset = f0 - a // hop
      specs = np.stack([
          log_compress(mag[:, s - f0 + offset:s - f0 + offset + length], self.cqt.top_db)[:self.crop_bins]
          for s in block])
      yield block, specs

  @property
  def windowing(self) -> tuple:
    """What decides the CQT windows: models with equal windowing can share them (embed_many)."""
    return (self.cqt, self.window, self.crop_bins, self.block_windows, self.margin_frames)

  def embed(self, waveform: np.ndarray, sample_rate: int, tokens: bool = True,
            allow_silence: bool = False) -> dict[str, np.ndarray]:
    """Numpy audio [n] (or [n, channels]) at any rate -> features (module docstring).

    Raises audio.AudioError for empty, non-finite or (unless allow_silence,
    which embeds it un-normalised) silent audio.
    """
    return embed_many([self], waveform, sample_rate, tokens, allow_silence)[0]

  def embed_file(self, path, tokens: bool = False) -> dict[str, np.ndarray]:
    """An audio file (any format audio.load_audio reads) -> features; AudioError if unusable."""
    from mt2_jax.data import audio
    x = audio.load_audio(path, self.sample_rate)
    return self.embed(x, self.sample_rate, tokens=tokens)


class _Collector:
  """One model's outputs over a file's blocks of windows -> Embedder.embed's dict."""

  def __init__(self, tokens: bool):
    self.tokens = tokens
    self.per_window: dict[str, list[np.ndarray]] = {}
    self.token_parts: list[np.ndarray] = []
    self.next_frame = 0  # First frame whose token has not been kept yet.

  def add(self, starts: np.ndarray, out: dict[str, np.ndarray]) -> None:
    for name, value in out.items():
      if name != "tokens":
        self.per_window.setdefault(name, []).append(value)
    if self.tokens:
      for s, seq in zip(starts, out["tokens"]):
        self.token_parts.append(seq[max(self.next_frame - s, 0):])
        self.next_frame = s + seq.shape[0]

  def result(self, timestamps: np.ndarray, frame_seconds: float) -> dict[str, np.ndarray]:
    result = {}
    for name, parts in self.per_window.items():
      windows = np.concatenate(parts)
      result[name] = windows.mean(axis=0)
      result[f"{name}_windows"] = windows
    result["timestamps"] = timestamps
    if self.tokens:
      result["tokens"] = np.concatenate(self.token_parts)
      result["token_timestamps"] = (np.arange(result["tokens"].shape[0]) * frame_seconds).astype(np.float32)
    return result


def embed_many(embedders, waveform: np.ndarray, sample_rate: int, tokens: bool = True,
               allow_silence: bool = False) -> list[dict[str, np.ndarray]]:
  """Embedder.embed of one waveform by several models, its CQT computed once.

  The models must cut audio into the same windows (equal `windowing`: CQT,
  window, crop, block and margin); probes of several runs use this so that
  the CQT, most of the time spent on a file, is not repeated per model.
  """
  from mt2_jax.data import audio
  first = embedders[0]
  if any(e.windowing != first.windowing for e in embedders[1:]):
    raise ValueError("embed_many: the models cut audio into different windows "
                     "(CQT settings, segment_frames or crop_bins differ); embed with each alone")
  x = audio.to_mono(np.asarray(waveform))
  if x.size == 0:
    raise audio.AudioError("empty: no samples")
  x = audio.resample(x, int(sample_rate), first.sample_rate)
  peak = _abs_max(x)
  if not np.isfinite(peak):
    raise audio.AudioError("non-finite samples (NaN or inf)")
  if peak < 1e-6:
    if not allow_silence:
      raise audio.AudioError("silent: peak amplitude below 1e-6")
    peak = 1.0

  collectors = [_Collector(tokens) for _ in embedders]
  starts_all = []
  for starts, specs in first.cqt_blocks(x, 1.0 / peak):
    for embedder, collector in zip(embedders, collectors):
      collector.add(starts, embedder.apply_windows(specs))
    starts_all.append(starts)
  starts = np.concatenate(starts_all)
  length = min(first.window, first.cqt.num_frames(x.size))
  timestamps = ((starts + (length - 1) / 2) * first.frame_seconds).astype(np.float32)
  return [c.result(timestamps, first.frame_seconds) for c in collectors]


def load(workdir, step: int | None = None, **kwargs) -> Embedder:
  """Shorthand for `Embedder.from_run`."""
  return Embedder.from_run(workdir, step, **kwargs)


def embed_folder(embedder: Embedder, audio_dir, out_dir, tokens: bool = False,
                 progress: bool = True) -> tuple[list[str], list[tuple[str, str]]]:
  """One .npz per audio file under audio_dir, at the same relative path in out_dir.

  Either folder may be a bucket URL (mt2_jax/storage.py). Files whose .npz
  exists are skipped; an entry that cannot be read (a dangling symlink) is
  rejected with its reason. Returns (written, [(skipped file, reason)]).
  """
  import tqdm
  from mt2_jax.data import audio
  audio_dir = storage.path(audio_dir)
  files, unreadable = audio.find_audio(audio_dir)
  out_dir = storage.output_dir(out_dir, "--out")
  written, rejected = [], []
  for entry, reason in unreadable:
    rejected.append((storage.relative(entry, audio_dir), reason))
    logging.warning("skipped %s: %s", entry, reason)
  for path in tqdm.tqdm(files, unit="file", desc="embed", disable=not progress):
    rel = storage.relative(path, audio_dir)
    target = out_dir / (posixpath.splitext(rel)[0] + ".npz")
    if target.exists():
      continue
    try:
      features = embedder.embed_file(path, tokens=tokens)
    except audio.AudioError as e:
      rejected.append((rel, str(e)))
      logging.warning("skipped %s: %s", rel, e)
      continue
    storage.save_npz(target, **features)
    written.append(rel)
  return written, rejected


__all__ = ["Embedder", "load", "embed_folder", "window_starts", "GLOBAL_FEATURES"]
