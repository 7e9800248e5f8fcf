"""The built-in corpus: Bach chorales rendered to labelled audio (`mt2 corpus`).

  make_corpus("/tmp/corpus")  # 150 chorales x 3 renditions x 30 s + 343 notes, ~25 s on 2 cores

Everything comes offline from the chorales that music21 ships
(mt2_jax.data.chorales: score -> MIDI -> notes in beats, keys, splits) ->
renditions, each a transposition, an instrument and a tempo -> audio from our
numpy synthesizer (mt2_jax.data.synth) or from a soundfont (midirenderer; with
`programs='family'` each rendition plays a GM program drawn from its
instrument's family) -> with `room` > 0, each rendition through its own random
recording chain (mt2_jax.data.room). `mt2 corpus` (mt2_jax/cli/corpus.py) is its command line.

Renditions repeat the chorale verse after verse (hymns are strophic) to fill
max_seconds, so every rendition has the same length. Layout of out_dir:
  chorales/<piece>_v<j>_<instrument>_<+t>st_<bpm>bpm.flac   renditions
  notes/<instrument>_<pitch>.flac                           isolated notes
  midi/<piece>.mid, midi/<piece>.json                       score export + key (a cache)
  labels.csv                                                one row per audio file
  corpus.json                                               settings that fix the audio

labels.csv is one table for both sets, told apart by `set`; point
`mt2 prepare` at `chorales/` to pretrain on music only. Columns (empty where
a column does not apply):
  file           path relative to out_dir, e.g. chorales/bwv269_v0_organ_+3st_96bpm.flac
  set            `chorale` or `note`
  piece          chorale id (`bwv269`) or note id (`organ_60`)
  split          train / validation / test, by piece
  instrument     synthesizer instrument name (mt2_jax.data.synth.INSTRUMENTS);
                 with programs='family', the name of a GM family
  program        General MIDI program 0-127 that plays it
  key            chorale: key of this rendition in mir_eval spelling (`F# minor`)
  tonic          chorale: pitch class 0-11 of the key's tonic (C = 0)
  mode           chorale: major / minor
  transposition  chorale: semitones added to every note (-6..5 by default)
  source_key     chorale: the score's own key, untransposed
  key_source     chorale: `encoded` (the score's key) or `analyzed` (music21's
                 key finding, for the 4 chorales whose encoding has no mode)
  tempo          chorale: quarter notes per minute
  pitch          note: MIDI note number
  pitch_class    note: pitch % 12
  seconds        length of the audio file in seconds

Keys, pieces and splits are the chorales module's (by piece, independent of
the seed). Notes are split by pitch, so a test pitch is never heard in
training: in a fixed hashed order, 7 of each 10 pitches train, 1 validation
and 2 test (NOTE_SPLIT_OF_RANK). The seed picks the renditions. Same
settings and seed, same bytes; a re-run into the same out_dir skips files
already written (writes are temp file + rename).
"""

import concurrent.futures
import csv
import dataclasses
import functools
import io
import json
import multiprocessing
import os
import zlib
from typing import Sequence

from absl import logging
import numpy as np
import soundfile as sf

from mt2_jax.data import chorales
from mt2_jax.data import room as room_lib
from mt2_jax.data import synth

COLUMNS = ("file", "set", "piece", "split", "instrument", "program", "key", "tonic", "mode",
           "transposition", "source_key", "key_source", "tempo", "pitch", "pitch_class", "seconds")
VERSION = 1  # Bump when the audio for given settings changes; stored in corpus.json.
LABELS_VERSION = 2  # Bump when labels.csv for given settings changes (2: NOTE_SPLIT_OF_RANK).
# Split of the note pitch at rank % 10 in a fixed hashed order. Two test
# pitches in ten, not the chorales' one: 9 of the 49 default pitches x 7
# instruments = 63 test notes, so that one note moves a score by at most
# ~0.02 (28 notes and 0.036 with one in ten).
NOTE_SPLIT_OF_RANK = ("train",) * 7 + ("test", "validation", "test")
VERSE_GAP_BEATS = 1.0  # Breath between repeated verses, in quarter notes.
NOTE_VELOCITY = 100
# Streams of a file's random numbers ([seed, crc32(file), stream]);
# plan_variants uses [seed, piece(, j)].
_ROOM_STREAM = 3
_PROGRAM_STREAM = 4


class CorpusError(Exception):
  """A request that cannot be rendered; `mt2 corpus` reports it without a traceback."""


class SettingsMismatchError(CorpusError):
  """--out already holds a corpus rendered with other settings."""


class SilentError(CorpusError):
  """A soundfont program has no sound for the notes asked of it."""


# ---------------------------------------------------------------------------
# Renditions.

@dataclasses.dataclass(frozen=True)
class Variant:
  """One rendition of a piece: variant index, instrument name, semitones, bpm."""
  index: int
  instrument: str
  transposition: int
  tempo: int


def plan_variants(piece: str, seed: int, num_variants: int, instruments: Sequence[str],
                  transpose: tuple[int, int], tempo: tuple[int, int]) -> list[Variant]:
  """Renditions of one piece, a function of (seed, piece) only.

  Within a piece, instruments and transpositions are drawn without
  replacement (cycling when there are more variants), so a piece's variants
  differ in key and sound; variant j does not depend on num_variants, so more
  variants extend a corpus instead of changing it.
  """
  key = [seed, zlib.crc32(piece.encode())]
  rng = np.random.default_rng(key)
  inst = rng.permutation(len(instruments))
  shifts = rng.permutation(np.arange(transpose[0], transpose[1] + 1))
  variants = []
  for j in range(num_variants):
    bpm = np.random.default_rng(key + [j]).integers(tempo[0], tempo[1] + 1)
    variants.append(Variant(j, instruments[inst[j % len(inst)]], int(shifts[j % len(shifts)]),
                            int(bpm)))
  return variants


def rendition_notes(notes: np.ndarray, transposition: int, tempo: float,
                    max_seconds: float | None) -> np.ndarray:
  """Notes in beats -> notes in seconds of one rendition.

  Args:
    notes: [N, 4] (start beat, end beat, pitch, velocity).
    transposition: semitones.
    tempo: quarter notes per minute.
    max_seconds: repeat the piece (a new verse after VERSE_GAP_BEATS) until
      this many seconds are covered, and drop notes starting later; None for
      one verse.

  Returns:
    [M, 4] (start s, end s, pitch, velocity).
  """
  beat = 60.0 / tempo
  verse = notes.copy()
  verse[:, 2] += transposition
  repeats = 1
  if max_seconds:
    period = notes[:, 1].max() + VERSE_GAP_BEATS  # Beats from one verse to the next.
    repeats = int(np.ceil(max_seconds / (period * beat)))
  out = np.concatenate([verse + [k * period, k * period, 0, 0] for k in range(repeats)])
  out[:, :2] *= beat
  if max_seconds:
    out = out[out[:, 0] < max_seconds]
  return out


def _fade_out(x: np.ndarray, sample_rate: int, seconds: float = 0.02) -> np.ndarray:
  """Fades the last `seconds` of [N] audio, so a cut rendition ends without a click."""
  n = min(len(x), int(seconds * sample_rate))
  x = x.copy()
  x[len(x) - n:] *= np.linspace(1.0, 0.0, n, dtype=x.dtype)
  return x


GM_SOUNDFONT = "gm"  # --soundfont value: TimGM6mb.sf2, the GM soundfont pretty_midi ships.


def soundfont_path(soundfont: str) -> str:
  """'gm' -> the path of pretty_midi's TimGM6mb.sf2; any other value is a path, returned as is."""
  if soundfont == GM_SOUNDFONT:
    import pretty_midi  # pylint: disable=g-import-not-at-top
    return os.path.join(os.path.dirname(pretty_midi.__file__), "TimGM6mb.sf2")
  return soundfont


@functools.lru_cache(maxsize=1)
def _soundfont_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def _render_soundfont(notes: np.ndarray, program: int, soundfont: str,
                      sample_rate: int) -> np.ndarray:
  """Renders [N, 4] notes in seconds with a soundfont. Returns [T] float32 mono.

  midirenderer (a pip wheel around the Rust synthesizer RustySynth) needs no
  system program, unlike fluidsynth; it renders at 48 kHz in stereo.
  """
  import librosa  # pylint: disable=g-import-not-at-top
  import midirenderer  # pylint: disable=g-import-not-at-top
  import pretty_midi  # pylint: disable=g-import-not-at-top
  pm = pretty_midi.PrettyMIDI()
  inst = pretty_midi.Instrument(program=program)
  inst.notes = [pretty_midi.Note(int(v), int(p), float(s), float(e)) for s, e, p, v in notes]
  # Reverb and chorus sends (CC 91, 93) at 0, so the audio is a function of
  # the notes; the same control 1 s after the last note-off lets the releases
  # ring out (the renderer stops at the last MIDI event).
  end = float(notes[:, 1].max()) + 1.0 if len(notes) else 1.0
  inst.control_changes = [pretty_midi.ControlChange(c, 0, t) for c in (91, 93)
                          for t in (0.0, end)]
  pm.instruments.append(inst)
  buf = io.BytesIO()
  pm.write(buf)
  try:
    wav = midirenderer.render_wave_from(_soundfont_bytes(soundfont_path(soundfont)),
                                        buf.getvalue())
  except (ValueError, RuntimeError) as e:
    raise CorpusError(f"could not render with the soundfont {soundfont}: {e}") from e
  x, sr = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
  x = x.mean(axis=1)
  if len(notes) and not np.any(x):  # A small soundfont may lack samples for some keys.
    pitches = sorted({int(p) for p in notes[:, 2]})
    raise SilentError(f"program {program} of soundfont {soundfont} is silent for pitches "
                      f"{pitches[0]}-{pitches[-1]}")
  if sr != sample_rate:
    x = librosa.resample(x, orig_sr=sr, target_sr=sample_rate).astype(np.float32)
  return x


def render(notes: np.ndarray, instrument: str, seconds: float | None,
           soundfont: str | None = None, sample_rate: int = synth.SAMPLE_RATE,
           program: int | None = None) -> np.ndarray:
  """[N, 4] notes in seconds -> [T] float32 peak-normalised audio.

  With `seconds`, T = seconds * sample_rate (cut or zero-padded, last 20 ms
  faded); without, the audio ends after the last release. With a soundfont,
  `program` (default: the instrument's own) picks the GM sound.
  """
  if soundfont is None:
    x = synth.render_notes(notes, instrument, sample_rate, seconds, peak=None)
  else:
    if program is None:
      program = synth.INSTRUMENTS[instrument].program
    x = _render_soundfont(notes, program, soundfont, sample_rate)
    if seconds:
      n = int(round(seconds * sample_rate))
      x = np.pad(x[:n], (0, max(n - len(x), 0)))
  if seconds:
    x = _fade_out(x, sample_rate)
  return synth.peak_normalise(x)


def write_audio(path: str, x: np.ndarray, sample_rate: int = synth.SAMPLE_RATE) -> None:
  """Writes [T] float audio as 16-bit FLAC or WAV (by extension), atomically."""
  fmt = os.path.splitext(path)[1][1:].upper()
  tmp = f"{path}.tmp{os.getpid()}"
  sf.write(tmp, x, sample_rate, format=fmt, subtype="PCM_16")
  os.replace(tmp, path)


# ---------------------------------------------------------------------------
# The corpus.

@dataclasses.dataclass(frozen=True)
class _Settings:
  """Everything that fixes the audio of a given file name; stored in corpus.json."""
  seed: int
  max_seconds: float
  instruments: tuple[str, ...]
  transpose: tuple[int, int]
  tempo: tuple[int, int]
  note_range: tuple[int, int]
  note_seconds: float
  audio_format: str
  soundfont: str | None
  room: float = 0.0  # Strength of each chorale rendition's recording chain (room.py); 0: dry.
  programs: str = "fixed"  # Or 'family': each file a GM program of its instrument's family.
  # What renders a soundfont: None without one (and fluidsynth before midirenderer).
  soundfont_renderer: str | None = None
  sample_rate: int = synth.SAMPLE_RATE
  version: int = VERSION


def _seconds(x: np.ndarray, sample_rate: int) -> str:
  return f"{len(x) / sample_rate:.3f}"


def _program(s: _Settings, instrument: str, rel: str) -> int:
  """The GM program of one file: its instrument's, or one of the family drawn from the file name."""
  inst = synth.INSTRUMENTS[instrument]
  if s.programs == "fixed":
    return inst.program
  rng = np.random.default_rng([s.seed, zlib.crc32(rel.encode()), _PROGRAM_STREAM])
  return int(rng.choice(inst.family))


def _chorale_task(name: str, split: str, out_dir: str, s: _Settings,
                  num_variants: int) -> list[dict]:
  """Renders (or finds) the variants of one chorale; returns their label rows."""
  chorale = None
  rows = []
  piece = chorales.piece_id(name)
  for v in plan_variants(piece, s.seed, num_variants, s.instruments, s.transpose, s.tempo):
    rel = (f"chorales/{piece}_v{v.index}_{v.instrument}_{v.transposition:+d}st_"
           f"{v.tempo}bpm.{s.audio_format}")
    path = os.path.join(out_dir, rel)
    program = _program(s, v.instrument, rel)
    if chorale is None:  # Key labels are needed even when all audio exists: read the cache.
      chorale = chorales.load_chorale(name, os.path.join(out_dir, "midi"))
    if os.path.exists(path):
      seconds = f"{sf.info(path).frames / s.sample_rate:.3f}"
    else:
      notes = rendition_notes(chorale.notes, v.transposition, v.tempo, s.max_seconds or None)
      x = render(notes, v.instrument, s.max_seconds or None, s.soundfont, s.sample_rate, program)
      if s.room:
        rng = np.random.default_rng([s.seed, zlib.crc32(rel.encode()), _ROOM_STREAM])
        room = room_lib.draw_room(rng, s.room)
        x = synth.peak_normalise(room_lib.apply_room(x, room, s.sample_rate))
      write_audio(path, x, s.sample_rate)
      seconds = _seconds(x, s.sample_rate)
    tonic = (chorale.tonic + v.transposition) % 12
    rows.append(dict(
        file=rel, set="chorale", piece=chorale.piece, split=split, instrument=v.instrument,
        program=program,
        key=chorales.key_label(tonic, chorale.mode), tonic=tonic, mode=chorale.mode,
        transposition=v.transposition, source_key=chorale.key, key_source=chorale.key_source,
        tempo=v.tempo, seconds=seconds))
  return rows


def _note_task(instrument: str, pitches: Sequence[int], out_dir: str, s: _Settings,
               note_splits: dict[int, str]) -> list[dict]:
  """Renders (or finds) the isolated notes of one instrument; returns their label rows.

  A note its program cannot sound is left out: its row has only `file` and
  `skipped` (the reason), for make_corpus to report.
  """
  rows = []
  hold = s.note_seconds * 0.75  # Held for 3/4 of the file, then released.
  for pitch in pitches:
    rel = f"notes/{instrument}_{pitch}.{s.audio_format}"
    path = os.path.join(out_dir, rel)
    program = _program(s, instrument, rel)
    if not os.path.exists(path):
      try:
        x = render(np.array([[0.0, hold, pitch, NOTE_VELOCITY]]), instrument, s.note_seconds,
                   s.soundfont, s.sample_rate, program)
      except SilentError as e:
        rows.append(dict(file=rel, skipped=str(e)))
        continue
      write_audio(path, x, s.sample_rate)
    rows.append(dict(
        file=rel, set="note", piece=f"{instrument}_{pitch}", split=note_splits[pitch],
        instrument=instrument, program=program, pitch=pitch,
        pitch_class=pitch % 12, seconds=f"{s.note_seconds:.3f}"))
  return rows


def _check_settings(out_dir: str, settings: _Settings) -> None:
  """Writes corpus.json, or refuses an --out made with other settings.

  Its files would otherwise be reused under labels they do not have.
  """
  path = os.path.join(out_dir, "corpus.json")
  mine = json.loads(json.dumps(dataclasses.asdict(settings)))  # Tuples -> lists, as read back.
  if os.path.exists(path):
    with open(path) as f:
      theirs = json.load(f)
    # Settings added later have defaults that give the audio of before.
    for field in dataclasses.fields(_Settings):
      if field.default is not dataclasses.MISSING and field.name != "version":
        theirs.setdefault(field.name, field.default)
    if theirs != mine:
      diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
      raise SettingsMismatchError(
          f"{out_dir} holds a corpus made with other settings (was, now): {diff}; choose"
          " another output directory.")
  else:
    chorales.write_atomic(path, json.dumps(mine, indent=1).encode())


def make_corpus(out_dir: str, seed: int = 0, num_pieces: int = 150, variants_per_piece: int = 3,
                max_seconds: float = 30.0, instruments: Sequence[str] | None = None,
                transpose: tuple[int, int] = (-6, 5), tempo: tuple[int, int] = (60, 132),
                notes: bool = True, note_range: tuple[int, int] = (36, 84),
                note_seconds: float = 2.0, audio_format: str = "flac",
                soundfont: str | None = None, programs: str = "fixed", room: float = 0.0,
                num_workers: int = 0,
                progress: bool = True) -> str:
  """Renders the chorale corpus (and the note set) into out_dir; see the module docstring.

  Args:
    out_dir: output directory (created).
    seed: picks each piece's renditions.
    num_pieces: chorales, taken in the fixed piece order; -1 for all.
    variants_per_piece: renditions per chorale.
    max_seconds: length of a rendition (verses repeat to fill it); 0 for one
      uncut verse.
    instruments: names from mt2_jax.data.synth.INSTRUMENTS; default all.
    transpose: (lowest, highest) semitones, inclusive.
    tempo: (lowest, highest) bpm, inclusive.
    notes: also render isolated notes of every instrument over note_range.
    note_range: (lowest, highest) MIDI pitch, inclusive.
    note_seconds: length of a note file (held 3/4 of it).
    audio_format: 'flac' or 'wav', 16-bit.
    soundfont: a .sf2 file to render with instead of the built-in synthesizer,
      or 'gm' for the General MIDI soundfont that pretty_midi ships.
    programs: 'fixed' (each instrument its GM program) or, with a soundfont,
      'family': each file plays a program drawn from its instrument's GM
      family (synth.Instrument.family), so that an instrument label covers
      several timbres.
    room: > 0 passes each chorale rendition through its own random recording
      chain (EQ, reverb, noise) of this strength (mt2_jax/data/room.py); the
      note set stays dry.
    num_workers: processes; 0 or 1 works in this one.
    progress: show a tqdm bar.

  Returns:
    Path of labels.csv.
  """
  import tqdm  # pylint: disable=g-import-not-at-top
  instruments = tuple(instruments or synth.INSTRUMENTS)
  unknown = set(instruments) - set(synth.INSTRUMENTS)
  if unknown:
    raise CorpusError(f"unknown instruments {sorted(unknown)}; known: {list(synth.INSTRUMENTS)}")
  if soundfont is not None:
    if soundfont != GM_SOUNDFONT:
      soundfont = os.path.abspath(soundfont)
    path = soundfont_path(soundfont)
    if not os.path.isfile(path):
      raise CorpusError(f"--soundfont {path}: no such file")
    with open(path, "rb") as f:
      head = f.read(12)
    if head[:4] != b"RIFF" or head[8:] != b"sfbk":
      raise CorpusError(f"{path} is not a SoundFont 2 (.sf2) file")
  if programs not in ("fixed", "family"):
    raise CorpusError(f"--programs must be 'fixed' or 'family', got {programs!r}")
  if programs == "family" and soundfont is None:
    raise CorpusError("--programs family needs --soundfont: the built-in synthesizer has one"
                      " sound per instrument")
  if room < 0:
    raise CorpusError(f"--room must be >= 0 (0: dry), got {room}")
  settings = _Settings(seed, float(max_seconds), instruments, tuple(map(int, transpose)),
                       tuple(map(int, tempo)), tuple(map(int, note_range)), float(note_seconds),
                       audio_format, soundfont, float(room), programs,
                       "midirenderer" if soundfont else None)
  for sub in ("chorales", "notes", "midi"):
    os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
  _check_settings(out_dir, settings)

  names = chorales.chorale_names()
  split_of = chorales.splits(names)
  if 0 <= num_pieces < len(names):
    names = names[:num_pieces]
  # (function, arguments, files it makes); one task per piece parses it once.
  tasks = [(_chorale_task, (n, split_of[n], out_dir, settings, variants_per_piece),
            variants_per_piece) for n in names]
  if notes:
    pitches = list(range(note_range[0], note_range[1] + 1))
    order = sorted(pitches, key=lambda p: chorales.stable_hash(f"note{p}"))
    note_splits = {p: NOTE_SPLIT_OF_RANK[i % 10] for i, p in enumerate(order)}
    tasks += [(_note_task, (i, pitches, out_dir, settings, note_splits), len(pitches))
              for i in instruments]

  rows = []
  bar = tqdm.tqdm(total=sum(n for _, _, n in tasks), unit="file", disable=not progress,
                  desc="corpus")
  if num_workers <= 1:
    for fn, args, n in tasks:
      rows += fn(*args)
      bar.update(n)
  else:
    # spawn: a fresh interpreter per worker, safe even if the caller has threads (JAX).
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=ctx) as pool:
      futures = {pool.submit(fn, *args): n for fn, args, n in tasks}
      try:
        for fut in concurrent.futures.as_completed(futures):
          rows += fut.result()
          bar.update(futures[fut])
      except BaseException:
        pool.shutdown(cancel_futures=True)  # Do not render the rest after a failure.
        raise
  bar.close()

  skipped = [r for r in rows if "skipped" in r]
  if skipped:
    logging.warning("%d notes left out, their soundfont program has no sound there: %s",
                    len(skipped), "; ".join(f"{r['file']} ({r['skipped']})" for r in skipped))
  rows = [r for r in rows if "skipped" not in r]
  rows.sort(key=lambda r: (r["set"], r["file"]))
  buf = io.StringIO()
  writer = csv.DictWriter(buf, COLUMNS, restval="", lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  labels = os.path.join(out_dir, "labels.csv")
  chorales.write_atomic(labels, buf.getvalue().encode())
  return labels
