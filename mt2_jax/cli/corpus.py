"""`mt2 corpus`: the built-in corpus, Bach chorales rendered to labelled audio.

  mt2 corpus --out /tmp/corpus    # 150 chorales x 3 renditions x 30 s + 343 notes, ~25 s on 2 cores
  mt2 corpus --out /tmp/small --num_pieces 12 --variants_per_piece 2 --max_seconds 10
  mt2 corpus --out /tmp/sf --soundfont gm   # pretty_midi's GM soundfont, or a path to a .sf2
  mt2 corpus --out /tmp/gm --soundfont gm --programs family   # several sounds per instrument
  mt2 corpus --out /tmp/rooms --room 1   # each rendition through its own EQ, reverb and noise

Renders music21's chorales (transposition, instrument and tempo variants)
and a single-note set into --out, with labels.csv (key, instrument, pitch,
split by piece...); prints the path of labels.csv. Same settings and seed,
same bytes; a re-run skips files already written. What is rendered, the
layout of --out and the columns of labels.csv: mt2_jax/data/corpus.py.
"""

import os
from typing import Sequence

from absl import app
from absl import flags

from mt2_jax.data import corpus
from mt2_jax.data import synth

# allow_override: prepare also has --out and --num_workers (mt2_jax/cli/__init__.py).
_OUT = flags.DEFINE_string("out", None, "Output directory.", allow_override=True)
_SEED = flags.DEFINE_integer("seed", 0,
                             "Seed of the renditions (transposition, instrument, tempo).",
                             allow_override=True)
_NUM_PIECES = flags.DEFINE_integer("num_pieces", 150, "Chorales to render; -1 for all (348).",
                                   allow_override=True)
_VARIANTS = flags.DEFINE_integer("variants_per_piece", 3, "Renditions per chorale.",
                                 allow_override=True)
_MAX_SECONDS = flags.DEFINE_float(
    "max_seconds", 30.0,
    "Length of each rendition in s (the chorale is repeated, verse after verse, to fill it and then"
    " cut); 0 renders one verse, uncut.", allow_override=True)
_INSTRUMENTS = flags.DEFINE_list("instruments", list(synth.INSTRUMENTS),
                                 "Instruments to draw from.", allow_override=True)
_TRANSPOSE = flags.DEFINE_list("transpose", ["-6", "5"],
                               "Lowest,highest transposition in semitones (inclusive).",
                               allow_override=True)
_TEMPO = flags.DEFINE_list("tempo", ["60", "132"], "Lowest,highest tempo in bpm (inclusive).",
                           allow_override=True)
_NOTES = flags.DEFINE_bool("notes", True, "Also render the single-note set.", allow_override=True)
_NOTE_RANGE = flags.DEFINE_list("note_range", ["36", "84"],
                                "Lowest,highest MIDI pitch of the note set (inclusive).",
                                allow_override=True)
_NOTE_SECONDS = flags.DEFINE_float("note_seconds", 2.0, "Length of each note file in s.",
                                   allow_override=True)
_SOUNDFONT = flags.DEFINE_string(
    "soundfont", None,
    "A .sf2 file to render with instead of the built-in synthesizer; 'gm' for the General MIDI"
    " soundfont that pretty_midi ships (TimGM6mb).", allow_override=True)
_PROGRAMS = flags.DEFINE_enum(
    "programs", "fixed", ["fixed", "family"],
    "With --soundfont: 'fixed' plays each instrument with its GM program, 'family' each file"
    " with a program drawn from the instrument's GM family (several timbres per label).",
    allow_override=True)
_ROOM = flags.DEFINE_float(
    "room", 0.0,
    "Strength of a random recording chain (EQ, reverb, noise) drawn for each chorale rendition"
    " (mt2_jax/data/room.py); 0 keeps the synthesizer's dry audio.", allow_override=True)
_WORKERS = flags.DEFINE_integer("num_workers", os.cpu_count() or 1,
                                "Worker processes; 0 or 1 renders in this process.",
                                allow_override=True)
_FORMAT = flags.DEFINE_enum("format", "flac", ["flac", "wav"], "Audio file format (16-bit).",
                            allow_override=True)


def _pair(values: Sequence[str], flag: str) -> tuple[int, int]:
  """['lo', 'hi'] of a list flag -> (lo, hi) integers, lo <= hi."""
  if len(values) != 2:
    raise app.UsageError(f"--{flag} takes two comma-separated integers, got {values}")
  lo, hi = map(int, values)
  if lo > hi:
    raise app.UsageError(f"--{flag}: {lo} > {hi}")
  return lo, hi


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _OUT.value:
    raise app.UsageError("--out is required")
  if "://" in _OUT.value:
    raise app.UsageError("--out must be a local folder (audio is rendered with local tools); "
                         "copy it to a bucket afterwards")
  try:
    labels = corpus.make_corpus(
        _OUT.value, seed=_SEED.value, num_pieces=_NUM_PIECES.value,
        variants_per_piece=_VARIANTS.value, max_seconds=_MAX_SECONDS.value,
        instruments=_INSTRUMENTS.value, transpose=_pair(_TRANSPOSE.value, "transpose"),
        tempo=_pair(_TEMPO.value, "tempo"), notes=_NOTES.value,
        note_range=_pair(_NOTE_RANGE.value, "note_range"), note_seconds=_NOTE_SECONDS.value,
        audio_format=_FORMAT.value, soundfont=_SOUNDFONT.value,
        programs=_PROGRAMS.value, room=_ROOM.value,
        num_workers=_WORKERS.value)
  except corpus.CorpusError as e:
    raise app.UsageError(str(e)) from e
  print(labels)
