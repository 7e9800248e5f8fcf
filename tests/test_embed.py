"""Embeddings in windows (mt2_jax.eval.embed), `mt2 embed` (mt2_jax.cli.embed) and the HEAR API
(mt2_jax.eval.hear)."""

import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from mt2_jax import sharding

from mt2_jax.eval import embed
from mt2_jax.eval import hear
from mt2_jax.data.cqt import cqt_magnitude, log_compress

from conftest import load_repo_file

SR = 22050


def _config(name="mt2", arg="runlocal"):
  return load_repo_file(f"configs/{name}.py").get_config(arg)


def music(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
  """Chords that change every 0.5 s plus a little noise: [n] float32."""
  rng = np.random.default_rng(seed)
  n = int(seconds * sr)
  t = np.arange(n) / sr
  x = np.zeros(n, np.float32)
  seg = int(0.5 * sr)
  for a in range(0, n, seg):
    for midi in rng.integers(40, 80, size=3):
      f = 440.0 * 2 ** ((midi - 69) / 12)
      x[a:a + seg] += np.sin(2 * np.pi * f * t[a:a + seg]).astype(np.float32)
  return x + 0.01 * rng.standard_normal(n).astype(np.float32)


@pytest.fixture(scope="module")
def embedder():
  # The paper's dense patch embedding: these tests compare windowings of one
  # signal, whose CQTs differ by ~1e-4 at block margins; the default hybrid
  # embedding's contrast step (model.PitchEmbed) amplifies that on near-flat
  # frames to ~5e-3 in the tokens, which would only blur what is tested here.
  return embed.Embedder.untrained(_config(arg="runlocal,paper"), seed=1, block_windows=4)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A run laid out as train.py writes it: config.json + an Orbax checkpoint."""
  from mt2_jax.train import checkpoint
  from mt2_jax import model as model_lib
  from mt2_jax.train import step as train_step
  workdir = tmp_path_factory.mktemp("run")
  config = _config()
  model = model_lib.build_model(config)
  tx = train_step.make_optimizer(config)
  state = train_step.create_train_state(config, model, tx, sharding.single_device_mesh())
  ckpt = checkpoint.Checkpointer(workdir)
  ckpt.save(7, state)
  ckpt.close()
  checkpoint.save_config(workdir, config)
  return workdir


def test_window_starts_cover_every_frame():
  np.testing.assert_array_equal(embed.window_starts(100, 128), [0])
  np.testing.assert_array_equal(embed.window_starts(256, 128), [0, 128])
  np.testing.assert_array_equal(embed.window_starts(300, 128), [0, 128, 172])  # Last one end-aligned.


def test_blocks_match_whole_file_cqt(embedder):
  """Block CQTs with margins equal the whole file's CQT cut into windows."""
  x = music(20.0)
  full = cqt_magnitude(x, embedder.cqt)
  w = embedder.window
  got = np.concatenate([specs for _, specs in embedder.cqt_blocks(x)])
  starts = embed.window_starts(full.shape[1], w)
  want = np.stack([log_compress(full[:, s:s + w])[:embedder.crop_bins] for s in starts])
  assert got.shape == want.shape == (starts.size, 84, w)
  np.testing.assert_allclose(got, want, atol=2e-3)


def test_long_file_equals_windows_one_by_one(embedder):
  x = music(25.0, seed=1)
  blocked = embedder.embed(x, SR)
  single = embed.Embedder(embedder.config, embedder.params, block_windows=1).embed(x, SR)
  assert set(blocked) == set(single)
  for k in blocked:
    np.testing.assert_allclose(blocked[k], single[k], atol=1e-3, err_msg=k)  # CQT margins: ~1e-4.
  # And the per-window features are the model applied to each window's CQT.
  specs = np.concatenate([s for _, s in embedder.cqt_blocks(x / np.abs(x).max())])
  direct = embedder.apply_windows(specs[2:3])
  np.testing.assert_allclose(blocked["cls_mean_windows"][2], direct["cls_mean"][0], atol=1e-4)


def test_outputs_shapes_and_timestamps(embedder):
  x = music(10.0)
  out = embedder.embed(x, SR)
  frames = embedder.cqt.num_frames(x.size)
  starts = embed.window_starts(frames, embedder.window)
  n, d = starts.size, embedder.width
  for name in ("cls_equivariant", "cls_contrastive", "cls_mean", "tokens_mean"):
    assert out[name].shape == (d,)
    assert out[f"{name}_windows"].shape == (n, d)
    np.testing.assert_allclose(out[name], out[f"{name}_windows"].mean(0), rtol=1e-5, atol=1e-6)
  assert out["head_cpsd_windows"].shape == (n, 12)
  np.testing.assert_allclose(out["head_cpsd_windows"].sum(1), 1.0, atol=1e-5)  # Softmax profiles.
  hop_s = embedder.cqt.hop_length / SR
  np.testing.assert_allclose(out["timestamps"], (starts + (embedder.window - 1) / 2) * hop_s, rtol=1e-6)
  assert out["tokens"].shape == (frames, d)
  np.testing.assert_allclose(np.diff(out["token_timestamps"]), hop_s, rtol=1e-4)
  # Frames of the end-aligned last window come from the earlier window where they overlap.
  last = embedder.apply_windows(np.concatenate([s for _, s in embedder.cqt_blocks(x / np.abs(x).max())]))
  np.testing.assert_allclose(out["tokens"][-1], last["tokens"][-1, -1], atol=1e-5)
  np.testing.assert_allclose(out["tokens"][0], last["tokens"][0, 0], atol=1e-5)


def test_short_audio_and_other_sample_rates(embedder):
  x = music(1.0)  # 44 frames < one 128-frame window.
  out = embedder.embed(x, SR)
  assert out["cls_mean_windows"].shape == (1, embedder.width)
  assert out["tokens"].shape[0] == embedder.cqt.num_frames(x.size)
  # Stereo at 44.1 kHz, half as loud: resampled, downmixed, peak-normalised.
  import librosa
  y = librosa.resample(music(6.0), orig_sr=SR, target_sr=44100)
  a = embedder.embed(y, 44100, tokens=False)["cls_mean"]
  b = embedder.embed(0.5 * np.stack([y, y], 1), 44100, tokens=False)["cls_mean"]
  c = embedder.embed(music(6.0), SR, tokens=False)["cls_mean"]
  np.testing.assert_allclose(a, b, atol=1e-4)
  assert np.dot(a, c) / np.linalg.norm(a) / np.linalg.norm(c) > 0.99


def test_bad_audio_is_an_audio_error(embedder):
  from mt2_jax.data.audio import AudioError
  for bad in (np.zeros(SR, np.float32), np.zeros(0, np.float32), np.full(SR, np.nan, np.float32)):
    with pytest.raises(AudioError):
      embedder.embed(bad, SR)


def _peak_bytes(fn) -> int:
  tracemalloc.start()
  try:
    fn()
    return tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()


def test_memory_does_not_grow_with_length(embedder):
  """numpy allocations (traced by tracemalloc) while embedding 1x vs 8x the audio."""
  short = music(36.0)  # 13 windows: four blocks.
  long = np.tile(short, 8)  # 101 windows: 26 blocks.
  embedder.embed(short, SR, tokens=False)  # Compile first.
  p1 = _peak_bytes(lambda: embedder.embed(short, SR, tokens=False))
  p8 = _peak_bytes(lambda: embedder.embed(long, SR, tokens=False))
  whole_file_cqt = 99 * embedder.cqt.num_frames(long.size) * 8  # complex64, what we avoid.
  assert p8 < 1.3 * p1, (p1, p8)
  assert p8 < whole_file_cqt, (p8, whole_file_cqt)
  assert p8 < long.nbytes / 4, (p8, long.nbytes)  # Not even one full-length copy of the audio.


def test_from_run_and_embed_folder(run_dir, tmp_path):
  e = embed.load(run_dir)
  assert e.step == 7
  audio_dir = tmp_path / "audio"
  (audio_dir / "sub").mkdir(parents=True)
  sf.write(audio_dir / "a.wav", music(4.0), SR)
  sf.write(audio_dir / "sub" / "b.flac", music(2.0, seed=3), 16000)
  (audio_dir / "broken.wav").write_bytes(b"not audio")
  written, rejected = embed.embed_folder(e, audio_dir, tmp_path / "out", progress=False)
  assert sorted(written) == ["a.wav", "sub/b.flac"]
  assert [r for r, _ in rejected] == ["broken.wav"]
  with np.load(tmp_path / "out" / "sub" / "b.npz") as z:
    assert z["cls_mean"].shape == (e.width,)
    assert z["cls_mean_windows"].shape[0] == z["timestamps"].shape[0] == 1
    assert z["head_cpsd"].shape == (12,)


def test_hear_api(run_dir):
  model = hear.load_model(str(run_dir))
  assert model.sample_rate == 22050
  assert model.scene_embedding_size == model.timestamp_embedding_size == 32
  audio = np.stack([music(4.0, seed=s) for s in range(2)] + [np.zeros(int(4.0 * SR), np.float32)])
  scene = hear.get_scene_embeddings(audio, model)
  assert scene.shape == (3, 32) and np.all(np.isfinite(scene))
  assert not np.allclose(scene[0], scene[1])
  emb, ts = hear.get_timestamp_embeddings(audio, model)
  frames = audio.shape[1] // 512 + 1
  assert emb.shape == (3, frames, 32)
  assert ts.shape == (3, frames)
  np.testing.assert_allclose(ts[0, :3], [0.0, 512 / 22.05, 1024 / 22.05], rtol=1e-5)  # Milliseconds.
  np.testing.assert_allclose(ts[1], ts[0])


def test_embed_command(run_dir, tmp_path, capsys):
  from absl.testing import flagsaver
  from mt2_jax.cli import embed as embed_cli
  audio_dir = tmp_path / "audio"
  audio_dir.mkdir()
  sf.write(audio_dir / "song.wav", music(5.0), SR)
  (audio_dir / "empty.wav").write_bytes(b"")
  with flagsaver.flagsaver(workdir=str(run_dir), audio=str(audio_dir), out=str(tmp_path / "emb")):
    embed_cli.main(["mt2 embed"])
  printed = capsys.readouterr().out
  assert "1 files" in printed and "skipped empty.wav" in printed
  with np.load(tmp_path / "emb" / "song.npz") as z:
    assert {"cls_mean", "cls_mean_windows", "timestamps", "head_cpsd"} <= set(z.files)
    assert "tokens" not in z.files  # Only with --tokens.
