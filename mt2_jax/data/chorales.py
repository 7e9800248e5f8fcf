"""The Bach chorales that music21 ships, as notes in beats with keys and splits.

The score side of `mt2 corpus` (mt2_jax/data/corpus.py renders them): which
chorales there are, in which fixed order, in which split, in which key, and
each one parsed to MIDI notes (cached, as parsing takes ~1 s a chorale).

Keys: the key encoded in the score (a music21 `Key` in the first part, which
all but 4 chorales have) is preferred; otherwise `score.analyze('key')`. A
rendition transposed by t semitones is in (tonic + t) mod 12, same mode, spelt
with one name per pitch class (PITCH_CLASSES), all accepted by mir_eval.

Pieces and splits do not depend on any seed: pieces are taken in a fixed
order (a hash of the id), so a smaller corpus is a subset of a larger one, and
every 10 consecutive pieces of that order give 8 train, 1 validation and 1
test. Identical chorales (music21 lists some twice) are kept once, and
chorales that share their melody note for note share a split.
"""

import dataclasses
import hashlib
import io
import json
import os
from typing import Sequence

import numpy as np

from mt2_jax.data.dataset import SPLITS
from mt2_jax.keys import PITCH_NAMES as PITCH_CLASSES  # One spelling per pitch class (mir_eval's).

# music21 10.5 lists some chorales twice under one name (removed by name) and
# two under two names; found by comparing all notes of all 350 names.
_SAME_CONTENT = {"bach/bwv274": "bach/bwv62.6", "bach/bwv69.6-a": "bach/bwv69.6"}
# Chorales whose soprano is note for note the same tune (up to transposition):
# each one takes the split of the first of its pair.
_SAME_TUNE = {
    "bach/bwv258": "bach/bwv114.7", "bach/bwv177.4": "bach/bwv117.4",
    "bach/bwv65.7": "bach/bwv144.6", "bach/bwv18.5-w": "bach/bwv18.5-l",
    "bach/bwv39.7": "bach/bwv194.6", "bach/bwv244.44": "bach/bwv244.15",
    "bach/bwv270": "bach/bwv244.54", "bach/bwv415": "bach/bwv245.26",
    "bach/bwv4.8": "bach/bwv277", "bach/bwv327": "bach/bwv326", "bach/bwv47.5": "bach/bwv421",
}


# ---------------------------------------------------------------------------
# Keys.

def key_label(tonic: int, mode: str) -> str:
  """(pitch class, 'major'|'minor') -> mir_eval key string, e.g. (6, 'minor') -> 'F# minor'."""
  return f"{PITCH_CLASSES[int(tonic) % 12]} {mode}"


def parse_key(label: str) -> tuple[int, str]:
  """mir_eval key string -> (tonic pitch class, mode). Accepts any of mir_eval's spellings."""
  name, mode = label.split()
  letter = "C D EF G A B".index(name[0].upper())  # Natural pitch classes by position.
  accidental = sum({"#": 1, "b": -1}[c] for c in name[1:])
  return (letter + accidental) % 12, mode


def transpose_key(label: str, semitones: int) -> str:
  """The key of music in `label` moved by `semitones` (mode unchanged)."""
  tonic, mode = parse_key(label)
  return key_label(tonic + semitones, mode)


def score_key(score) -> tuple[int, str, str]:
  """Key of a music21 score: (tonic pitch class, mode, 'encoded' | 'analyzed').

  The encoded key is the first key signature of the first part when the file
  gives its mode (a music21 `Key`); otherwise music21's key finding decides.
  """
  from music21 import key  # pylint: disable=g-import-not-at-top
  first = score.parts[0].recurse().getElementsByClass(key.KeySignature).first()
  if isinstance(first, key.Key) and first.mode in ("major", "minor"):
    return first.tonic.pitchClass, first.mode, "encoded"
  found = score.analyze("key")
  return found.tonic.pitchClass, found.mode, "analyzed"


# ---------------------------------------------------------------------------
# Pieces and splits.

def stable_hash(text: str) -> int:
  """A hash of `text` that is the same in every process and Python version."""
  return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big")


def split_of_rank(rank: int) -> str:
  """Split of the item at `rank` in a fixed order: ranks 8 and 9 of each 10 -> validation, test."""
  return SPLITS[max(rank % 10 - 7, 0)]


def chorale_names() -> list[str]:
  """music21 corpus names of the distinct chorales (`bach/bwv269`), in the fixed piece order."""
  from music21 import corpus  # pylint: disable=g-import-not-at-top
  names = set(corpus.chorales.Iterator(returnType="filename")) - set(_SAME_CONTENT)
  return sorted(names, key=lambda n: (stable_hash(n), n))


def piece_id(name: str) -> str:
  """'bach/bwv248.12-2' -> 'bwv248.12-2' (safe in file names)."""
  return name.split("/")[-1]


def splits(names: Sequence[str]) -> dict[str, str]:
  """Split of every name in the piece order (split_of_rank); one tune, one split."""
  rank = {n: i for i, n in enumerate(names)}
  return {n: split_of_rank(rank[_SAME_TUNE.get(n, n)]) for n in names}


# ---------------------------------------------------------------------------
# Scores.

@dataclasses.dataclass(frozen=True)
class Chorale:
  """A chorale as notes in beats.

  Attributes:
    piece: id, e.g. 'bwv269'.
    notes: [N, 4] float64 (start beat, end beat, MIDI pitch, velocity), beats
      are quarter notes, the first onset at 0.
    tonic, mode, key_source: see score_key.
  """
  piece: str
  notes: np.ndarray
  tonic: int
  mode: str
  key_source: str

  @property
  def key(self) -> str:
    return key_label(self.tonic, self.mode)


def write_atomic(path: str, data: bytes) -> None:
  """Writes `data` to `path` through a temporary file and a rename: never half a file."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def _midi_beats(midi_bytes: bytes) -> np.ndarray:
  """MIDI file bytes -> [N, 4] (start beat, end beat, pitch, velocity), first onset at 0."""
  import pretty_midi  # pylint: disable=g-import-not-at-top
  pm = pretty_midi.PrettyMIDI(io.BytesIO(midi_bytes))
  # Ticks, not seconds: exact beats whatever tempo music21 wrote.
  rows = [(pm.time_to_tick(n.start), pm.time_to_tick(n.end), n.pitch, n.velocity)
          for inst in pm.instruments if not inst.is_drum for n in inst.notes]
  notes = np.asarray(rows, np.float64).reshape(-1, 4)
  notes[:, :2] /= pm.resolution
  if len(notes):
    notes[:, :2] -= notes[:, 0].min()
  return notes


def load_chorale(name: str, cache_dir: str | None = None) -> Chorale:
  """Parses a chorale with music21 and exports it to MIDI, or reads both from cache_dir.

  The cache holds <piece>.mid (music21's MIDI export) and <piece>.json (its
  key); parsing and exporting take ~1 s a chorale (music21 expands repeats
  on deep copies), reading the cache ~10 ms.
  """
  piece = piece_id(name)
  mid = json_path = None
  if cache_dir:
    mid, json_path = (os.path.join(cache_dir, piece + ext) for ext in (".mid", ".json"))
    if os.path.exists(mid) and os.path.exists(json_path):
      with open(json_path) as f:
        info = json.load(f)
      with open(mid, "rb") as f:
        return Chorale(piece, _midi_beats(f.read()), info["tonic"], info["mode"],
                       info["key_source"])
  from music21 import corpus  # pylint: disable=g-import-not-at-top
  from music21 import midi  # pylint: disable=g-import-not-at-top
  score = corpus.parse(name)
  tonic, mode, source = score_key(score)
  midi_bytes = midi.translate.streamToMidiFile(score).writestr()
  if cache_dir:
    write_atomic(mid, midi_bytes)
    info = dict(name=name, tonic=tonic, mode=mode, key=key_label(tonic, mode), key_source=source)
    write_atomic(json_path, json.dumps(info, indent=1).encode())
  return Chorale(piece, _midi_beats(midi_bytes), tonic, mode, source)
