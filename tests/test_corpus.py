"""Tests of `mt2 corpus` (mt2_jax.data.corpus, .chorales, mt2_jax/cli/corpus.py) and its
synthesizer (mt2_jax.data.synth).

One small corpus is rendered once per module and checked against music21,
mir_eval and signal analysis of its own audio.
"""

import csv
import itertools
import os
import re
import subprocess
import sys

import librosa
import mir_eval
import numpy as np
import pytest
import soundfile as sf

from mt2_jax.data import chorales as chorales_lib  # chorales(rows) is a helper here.
from mt2_jax.data import corpus
from mt2_jax.data import synth

SR = synth.SAMPLE_RATE
# Small but complete: 4 chorales x 2 renditions of 8 s, notes 57..64 of all 7 instruments.
SMALL = dict(seed=0, num_pieces=4, variants_per_piece=2, max_seconds=8.0, note_range=(57, 64),
             progress=False)


def read_labels(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("corpus"))
  labels = corpus.make_corpus(out, num_workers=0, **SMALL)
  return out, read_labels(labels)


def chorales(rows):
  return [r for r in rows if r["set"] == "chorale"]


def notes(rows):
  return [r for r in rows if r["set"] == "note"]


def test_key_spelling_is_mir_eval_and_consistent():
  for tonic, mode in itertools.product(range(12), ("major", "minor")):
    label = chorales_lib.key_label(tonic, mode)
    mir_eval.key.validate_key(label)
    name, m = label.split()
    assert mir_eval.key.KEY_TO_SEMITONE[name.lower()] == tonic and m == mode
    assert chorales_lib.parse_key(label) == (tonic, mode)
    for shift in range(-12, 13):
      moved = chorales_lib.transpose_key(label, shift)
      assert mir_eval.key.KEY_TO_SEMITONE[moved.split()[0].lower()] == (tonic + shift) % 12
  # One spelling per pitch class, and every mir_eval spelling is understood.
  assert len(set(chorales_lib.PITCH_CLASSES)) == 12
  for name, pc in mir_eval.key.KEY_TO_SEMITONE.items():
    if pc is not None:
      assert chorales_lib.parse_key(f"{name.capitalize()} minor") == (pc, "minor")


def test_labels_schema_and_files(small):
  out, rows = small
  with open(os.path.join(out, "labels.csv")) as f:
    assert f.readline().strip().split(",") == list(corpus.COLUMNS)
  assert len(chorales(rows)) == SMALL["num_pieces"] * SMALL["variants_per_piece"]
  assert len(notes(rows)) == len(synth.INSTRUMENTS) * 8
  for r in rows:
    info = sf.info(os.path.join(out, r["file"]))
    assert info.samplerate == SR and info.channels == 1
    assert float(r["seconds"]) == pytest.approx(info.frames / SR, abs=1e-3)
    assert int(r["program"]) == synth.INSTRUMENTS[r["instrument"]].program
    if r["set"] == "chorale":
      assert r["pitch"] == "" and r["mode"] in ("major", "minor")
      assert info.frames == SMALL["max_seconds"] * SR
      assert 60 <= int(r["tempo"]) <= 132 and -6 <= int(r["transposition"]) <= 5
    else:
      assert r["key"] == r["tonic"] == r["tempo"] == ""
      assert int(r["pitch_class"]) == int(r["pitch"]) % 12
    x, _ = sf.read(os.path.join(out, r["file"]), dtype="float32")
    assert np.abs(x).max() == pytest.approx(synth.PEAK, abs=1e-3)  # Peak-normalised.


def _score_key_and_histogram(piece):
  """Key and duration-weighted pitch-class histogram, straight from music21."""
  from music21 import corpus as m21corpus
  from music21 import key
  score = m21corpus.parse(f"bach/{piece}")
  k = score.parts[0].recurse().getElementsByClass(key.KeySignature).first()
  if not isinstance(k, key.Key):
    k = score.analyze("key")
  hist = np.zeros(12)
  for n in score.flatten().notes:
    for p in n.pitches:
      hist[p.pitchClass] += n.duration.quarterLength
  return (k.tonic.pitchClass, k.mode), hist


def test_transposed_key_is_source_key_moved_and_audio_agrees(small):
  out, rows = small
  for r in chorales(rows):
    (tonic, mode), hist = _score_key_and_histogram(r["piece"])
    shift = int(r["transposition"])
    mir_eval.key.validate_key(r["key"])
    name, label_mode = r["key"].split()
    assert mir_eval.key.KEY_TO_SEMITONE[name.lower()] == (tonic + shift) % 12 == int(r["tonic"])
    assert label_mode == mode == r["mode"]
    assert chorales_lib.parse_key(r["source_key"]) == (tonic, mode)
    # The audio itself is transposed: its chroma matches the score's pitch
    # classes rotated by exactly the labelled shift, better than by any other.
    x, _ = sf.read(os.path.join(out, r["file"]), dtype="float32")
    chroma = librosa.feature.chroma_cqt(y=x, sr=SR, hop_length=2048).mean(axis=1)
    corr = [np.corrcoef(chroma, np.roll(hist, k))[0, 1] for k in range(12)]
    assert int(np.argmax(corr)) == shift % 12, (r["file"], corr)


def test_same_seed_gives_same_bytes_in_any_process(small, tmp_path):
  out, rows = small
  # Worker processes start with empty tone caches: the audio must not depend on that.
  labels = corpus.make_corpus(str(tmp_path), num_workers=2, **SMALL)
  with open(labels) as a, open(os.path.join(out, "labels.csv")) as b:
    assert a.read() == b.read()
  for r in rows:
    with open(tmp_path / r["file"], "rb") as a, open(os.path.join(out, r["file"]), "rb") as b:
      assert a.read() == b.read(), r["file"]
  # And the seed matters.
  plan = lambda seed: [corpus.plan_variants(r["piece"], seed, 2, list(synth.INSTRUMENTS),
                                            (-6, 5), (60, 132)) for r in chorales(rows)]
  assert plan(0) == plan(0) and plan(0) != plan(1)


def test_rerun_skips_written_files_and_refuses_other_settings(small, tmp_path):
  out = str(tmp_path)
  args = dict(SMALL, num_pieces=2, note_range=(60, 60), instruments=("organ", "piano"))
  first = read_labels(corpus.make_corpus(out, num_workers=0, **args))
  mtimes = {r["file"]: os.stat(os.path.join(out, r["file"])).st_mtime_ns for r in first}
  again = read_labels(corpus.make_corpus(out, num_workers=0, **args))
  assert again == first
  assert all(os.stat(os.path.join(out, f)).st_mtime_ns == t for f, t in mtimes.items())
  # More variants extend the corpus: the earlier files and labels stay as they were.
  more = read_labels(corpus.make_corpus(out, num_workers=0, **dict(args, variants_per_piece=3)))
  assert all(r in more for r in first) and len(more) == len(first) + 2
  assert all(os.stat(os.path.join(out, f)).st_mtime_ns == t for f, t in mtimes.items())
  assert not [f for f in os.listdir(os.path.join(out, "chorales")) if ".tmp" in f]
  with pytest.raises(corpus.SettingsMismatchError, match="seed"):
    corpus.make_corpus(out, num_workers=0, **dict(args, seed=1))


def _harmonics(x, f0, n=10):
  """Magnitudes [n] of the first n harmonics of f0 in [T] audio."""
  spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), 4 * len(x)))
  freqs = np.fft.rfftfreq(4 * len(x), 1 / SR)
  return np.array([spec[(freqs > f0 * h * 0.97) & (freqs < f0 * h * 1.03)].max()
                   for h in range(1, n + 1)])


def test_instruments_have_different_spectra_and_envelopes(small):
  out, rows = small
  profile, stats = {}, {}
  for name in synth.INSTRUMENTS:
    feats, even_odd, fund, decay = [], [], [], []
    for pitch in (57, 60, 64):
      x, _ = sf.read(os.path.join(out, f"notes/{name}_{pitch}.flac"), dtype="float32")
      f0 = librosa.midi_to_hz(pitch)
      early = _harmonics(x[int(0.05 * SR):int(0.35 * SR)], f0)
      late = _harmonics(x[int(1.0 * SR):int(1.4 * SR)], f0)
      feats.append(20 * np.log10(np.concatenate([early, late]) / early.max() + 1e-3))
      energy = early ** 2 / np.sum(early ** 2)
      even_odd.append(energy[1::2].sum() / energy[0::2].sum())
      fund.append(energy[0])
      rms = lambda a, b: np.sqrt(np.mean(x[int(a * SR):int(b * SR)] ** 2))
      decay.append(rms(1.1, 1.4) / rms(0.2, 0.4))
    profile[name] = np.mean(feats, axis=0)
    stats[name] = dict(even_odd=np.mean(even_odd), fund=np.mean(fund), decay=np.mean(decay))
  # Every pair differs by several dB in its harmonic spectrum (early + late).
  for a, b in itertools.combinations(synth.INSTRUMENTS, 2):
    assert np.sqrt(np.mean((profile[a] - profile[b]) ** 2)) > 3.0, (a, b)
  # And in the ways the instruments were built to.
  assert stats["clarinet"]["even_odd"] < 0.05 < 0.2 < stats["organ"]["even_odd"]
  assert stats["flute"]["fund"] > 0.85 > 0.7 > stats["brass"]["fund"]
  for name in ("piano", "guitar"):
    assert stats[name]["decay"] < 0.6, name
  for name in ("organ", "clarinet", "brass", "flute", "strings"):
    assert stats[name]["decay"] > 0.8, name


def test_note_fundamental_matches_its_pitch(small):
  out, rows = small
  for r in notes(rows):
    x, _ = sf.read(os.path.join(out, r["file"]), dtype="float32")
    f0 = librosa.yin(x[int(0.1 * SR):int(1.4 * SR)], fmin=50, fmax=1200, sr=SR, frame_length=2048)
    assert librosa.hz_to_midi(np.median(f0)) == pytest.approx(int(r["pitch"]), abs=0.25), r["file"]


def test_splits_are_by_piece():
  names = chorales_lib.chorale_names()
  assert len(names) == len(set(names)) >= 340
  assert not set(chorales_lib._SAME_CONTENT) & set(names)
  split_of = chorales_lib.splits(names)
  assert set(split_of.values()) == set(chorales_lib.SPLITS)
  for other, first in chorales_lib._SAME_TUNE.items():  # One tune, one split.
    assert split_of[other] == split_of[first]
  share = {s: list(split_of.values()).count(s) / len(names) for s in chorales_lib.SPLITS}
  assert 0.75 < share["train"] < 0.85 and 0.07 < share["test"] < 0.13
  # Any 20 first pieces already hold every split (a small corpus can be evaluated).
  assert {split_of[n] for n in names[:20]} == set(chorales_lib.SPLITS)
  # The order, and so a corpus's pieces and splits, do not depend on the seed.
  assert chorales_lib.chorale_names() == names


def test_rendered_corpus_has_each_piece_in_one_split(small):
  _, rows = small
  for column in ("piece",):
    seen = {}
    for r in rows:
      seen.setdefault(r[column], set()).add(r["split"])
    assert all(len(s) == 1 for s in seen.values())
  # Notes: each pitch in one split, whatever the instrument.
  pitch_splits = {}
  for r in rows:
    if r["set"] == "note":
      pitch_splits.setdefault(r["pitch"], set()).add(r["split"])
  assert pitch_splits and all(len(s) == 1 for s in pitch_splits.values())


def test_note_splits_leave_at_least_50_default_test_notes():
  # The default note set: one test note must move a score by <= ~0.02.
  import inspect
  low, high = inspect.signature(corpus.make_corpus).parameters["note_range"].default
  test_pitches = sum(corpus.NOTE_SPLIT_OF_RANK[i % 10] == "test" for i in range(high - low + 1))
  assert test_pitches * len(synth.INSTRUMENTS) >= 50
  assert set(corpus.NOTE_SPLIT_OF_RANK) == {"train", "validation", "test"}


def test_render_notes_is_order_independent_and_sized():
  rng = np.random.default_rng(0)
  starts = rng.uniform(0, 2, 12)
  notes_ = np.stack([starts, starts + rng.uniform(0.1, 1, 12), rng.integers(40, 80, 12),
                     rng.integers(60, 120, 12)], axis=1)
  a = synth.render_notes(notes_, "piano", seconds=2.5)
  b = synth.render_notes(notes_[::-1], "piano", seconds=2.5)
  assert a.dtype == np.float32 and a.shape == (int(2.5 * SR),)
  assert np.array_equal(a, b) and np.abs(a).max() == pytest.approx(synth.PEAK)


def test_bad_soundfont_requests_are_clear_errors(tmp_path):
  sf2 = tmp_path / "x.sf2"
  sf2.write_bytes(b"not a soundfont")
  with pytest.raises(corpus.CorpusError, match="not a SoundFont"):
    corpus.make_corpus(str(tmp_path / "a"), soundfont=str(sf2), progress=False)
  with pytest.raises(corpus.CorpusError, match="no such file"):
    corpus.make_corpus(str(tmp_path / "b"), soundfont=str(tmp_path / "none.sf2"), progress=False)
  with pytest.raises(corpus.CorpusError, match="needs --soundfont"):
    corpus.make_corpus(str(tmp_path / "c"), programs="family", progress=False)
  with pytest.raises(corpus.CorpusError, match="'fixed' or 'family'"):
    corpus.make_corpus(str(tmp_path / "d"), soundfont="gm", programs="any", progress=False)
  assert not any((tmp_path / d).exists() for d in "abcd")  # Refused before writing anything.


def _median_midi(x):
  f0 = librosa.yin(x[int(0.1 * SR):int(1.2 * SR)], fmin=50, fmax=1200, sr=SR)
  return librosa.hz_to_midi(np.median(f0))


# Flute: its pitch is the strongest partial, so yin reads it reliably.
GM = dict(num_pieces=2, variants_per_piece=2, max_seconds=4, note_range=(60, 62),
          instruments=("flute", "organ"), soundfont="gm", progress=False)


def test_soundfont_rendering(tmp_path):
  rows = read_labels(corpus.make_corpus(str(tmp_path), **GM))
  assert len(chorales(rows)) == 4
  for r in rows:
    x, sr = sf.read(tmp_path / r["file"], dtype="float32")
    assert sr == SR and np.abs(x).max() == pytest.approx(synth.PEAK, abs=1e-3)
    assert int(r["program"]) == synth.INSTRUMENTS[r["instrument"]].program
    if r["set"] == "chorale":
      assert len(x) == 4 * SR
    elif r["instrument"] == "flute":
      assert _median_midi(x) == pytest.approx(int(r["pitch"]), abs=0.25)
      assert np.abs(x[int(1.8 * SR):]).max() < 0.05 * synth.PEAK  # Released, no reverb tail.


def test_family_programs_vary_timbre_within_an_instrument(tmp_path):
  args = dict(GM, note_range=(60, 67), programs="family")
  rows = read_labels(corpus.make_corpus(str(tmp_path / "a"), **args))
  again = read_labels(corpus.make_corpus(str(tmp_path / "b"), **args))
  assert [r["program"] for r in rows] == [r["program"] for r in again]  # Seeded by file name.
  for name in GM["instruments"]:
    programs = {int(r["program"]) for r in rows if r["instrument"] == name}
    assert programs <= set(synth.INSTRUMENTS[name].family) and len(programs) >= 3, programs
  # A note played by another program than the instrument's own sounds different.
  fixed = read_labels(corpus.make_corpus(str(tmp_path / "fixed"), **dict(args, programs="fixed")))
  differ = 0
  for r, f in zip(notes(rows), notes(fixed)):
    assert (r["file"], r["pitch"]) == (f["file"], f["pitch"])
    if r["program"] != f["program"]:
      x, _ = sf.read(tmp_path / "a" / r["file"], dtype="float32")
      y, _ = sf.read(tmp_path / "fixed" / f["file"], dtype="float32")
      differ += np.abs(x - y).max() > 0.1
  assert differ >= 4
  with pytest.raises(corpus.SettingsMismatchError, match="programs"):
    corpus.make_corpus(str(tmp_path / "a"), **GM)


def test_a_note_its_program_cannot_sound_is_left_out_and_reported(tmp_path, caplog):
  # TimGM6mb has no alto-sax sample (program 65) at E4 = 64: silence.
  with pytest.raises(corpus.SilentError, match="program 65"):
    corpus.render(np.array([[0.0, 0.5, 64, 100]]), "clarinet", 1.0, "gm", program=65)
  # Seed 0 draws program 65 for notes/clarinet_64 (the demo's gm corpus met it).
  rows = read_labels(corpus.make_corpus(
      str(tmp_path), **dict(GM, num_pieces=0, instruments=("clarinet",), note_range=(63, 65),
                            programs="family")))
  assert [r["pitch"] for r in rows] == ["63", "65"]
  assert not (tmp_path / "notes" / "clarinet_64.flac").exists()
  assert "clarinet_64.flac (program 65" in caplog.text


def test_command_line(tmp_path):
  cmd = [sys.executable, "-m", "mt2_jax.cli", "corpus", f"--out={tmp_path}", "--num_pieces=1",
         "--variants_per_piece=1", "--max_seconds=3", "--nonotes", "--num_workers=0",
         "--instruments=organ", "--format=wav"]
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip().splitlines()[-1] == str(tmp_path / "labels.csv")
  assert not re.search(r"^I\d{4} ", done.stderr, re.M), done.stderr  # No absl INFO lines.
  rows = read_labels(tmp_path / "labels.csv")
  assert [r["instrument"] for r in rows] == ["organ"] and rows[0]["file"].endswith(".wav")
  assert sf.info(tmp_path / rows[0]["file"]).frames == 3 * SR
  done = subprocess.run(cmd[:-1] + ["--seed=5"], capture_output=True, text=True, timeout=120)
  assert done.returncode != 0 and "other settings" in done.stderr
