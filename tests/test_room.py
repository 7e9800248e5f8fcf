"""Tests of the recording chain (mt2_jax.data.room) and `mt2 corpus --room`."""

import json
import os

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from mt2_jax.data import corpus
from mt2_jax.data import room
from mt2_jax.data import synth

SR = synth.SAMPLE_RATE


def noise(seconds=1.0, seed=0):
  return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def gain_db(x, y, hz):
  """Gain of y over x at `hz` in dB, from Welch spectra."""
  f, pxx = signal.welch(x, SR, nperseg=2048)
  _, pyy = signal.welch(y, SR, nperseg=2048)
  i = np.argmin(np.abs(f - hz))
  return 10 * np.log10(pyy[i] / pxx[i])


def test_strength_zero_is_the_dry_audio_and_draws_are_seeded():
  x = noise()
  dry = room.draw_room(np.random.default_rng(1), 0.0)
  np.testing.assert_allclose(room.apply_room(x, dry, SR), x, atol=1e-6)
  a, b = (room.draw_room(np.random.default_rng(s), 1.0) for s in (1, 1))
  assert a == b and a != room.draw_room(np.random.default_rng(2), 1.0)
  np.testing.assert_array_equal(room.apply_room(x, a, SR), room.apply_room(x, b, SR))
  with pytest.raises(ValueError, match=">= 0"):
    room.draw_room(np.random.default_rng(0), -1.0)


def test_chain_applies_the_drawn_gains_and_noise():
  x = noise(2.0)
  peak = room.Room(0.0, 0.0, ((1000.0, 12.0, 1.0),), 0.1, 0.5, 0.0, -np.inf, 0)
  y = room.apply_room(x, peak, SR)
  assert gain_db(x, y, 1000) == pytest.approx(12.0, abs=0.5)
  assert abs(gain_db(x, y, 100)) < 0.5 and abs(gain_db(x, y, 8000)) < 0.5
  shelves = room.Room(-9.0, 9.0, (), 0.1, 0.5, 0.0, -np.inf, 0)
  y = room.apply_room(x, shelves, SR)
  assert gain_db(x, y, 60) == pytest.approx(-9.0, abs=1.0)
  assert gain_db(x, y, 9000) == pytest.approx(9.0, abs=1.0)
  quiet = room.Room(0.0, 0.0, (), 0.1, 0.5, 0.0, -20.0, 0)
  assert np.std(room.apply_room(x, quiet, SR) - x) / np.std(x) == pytest.approx(0.1, rel=0.05)
  # The reverb adds a tail: an impulse rings on.
  click = np.zeros(SR, np.float32)
  click[100] = 1.0
  wet = room.apply_room(click, room.Room(0.0, 0.0, (), 0.8, 0.3, 0.4, -np.inf, 0), SR)
  assert np.sqrt(np.mean(wet[SR // 2:] ** 2)) > 1e-4


def test_corpus_room_colours_renditions_only_and_is_a_setting(tmp_path):
  args = dict(seed=0, num_pieces=1, variants_per_piece=2, max_seconds=4.0, note_range=(60, 60),
              instruments=("organ", "piano"), progress=False, num_workers=0)
  dry, wet = str(tmp_path / "dry"), str(tmp_path / "wet")
  corpus.make_corpus(dry, **args)
  corpus.make_corpus(wet, room=1.0, **args)
  with open(os.path.join(dry, "labels.csv")) as a, open(os.path.join(wet, "labels.csv")) as b:
    rows = a.read()
    assert rows == b.read()  # Same files and labels: only the sound differs.
  files = [line.split(",")[0] for line in rows.splitlines()[1:]]
  for f in files:
    x, _ = sf.read(os.path.join(dry, f), dtype="float32")
    y, _ = sf.read(os.path.join(wet, f), dtype="float32")
    assert x.shape == y.shape
    if f.startswith("notes/"):
      np.testing.assert_array_equal(x, y)
    else:  # Each rendition coloured, and peak-normalised like the dry one.
      assert np.abs(x - y).max() > 0.05, f
      assert np.abs(y).max() == pytest.approx(synth.PEAK, abs=1e-3)
  with pytest.raises(corpus.SettingsMismatchError, match="room"):
    corpus.make_corpus(wet, **args)
  with pytest.raises(corpus.CorpusError, match="--room"):
    corpus.make_corpus(str(tmp_path / "bad"), room=-1.0, **args)
  # A corpus.json written before `room` and `programs` existed is a dry corpus.
  settings = os.path.join(dry, "corpus.json")
  with open(settings) as f:
    old = {k: v for k, v in json.load(f).items()
           if k not in ("room", "programs", "soundfont_renderer")}
  with open(settings, "w") as f:
    json.dump(old, f)
  corpus.make_corpus(dry, **args)
