"""A small additive synthesizer in numpy: notes + instrument name -> waveform.

Each instrument is a function that makes the *held tone* of one MIDI pitch: a
sum of partials with their own amplitudes, decays, onsets and vibrato, plus
noise where the real instrument has some (breath, hammer, pluck). A tone is
computed once per (instrument, pitch, sample rate), at a fixed length, and
cached; rendering a score is then only slice-adds of cached tones with a
release ramp at each note-off, so a 30 s chorale renders in milliseconds once
its tones exist.

Determinism: a tone depends only on (instrument, pitch, sample rate), never on
what was rendered before or on the note's length (notes are cut from one
fixed-length tone), so the same notes give bit-identical audio in any process
and in any order (on one machine: float32 sin/exp may round differently on
other CPUs or numpy builds).

The instruments differ in spectrum (odd-only, full, near-sine, inharmonic) and
in envelope (sustained, percussive, plucked, slow bowed attack), so that
instrument is audible, and learnable, in a CQT.
"""

import dataclasses
import functools
import zlib
from typing import Callable, Sequence

import numpy as np
from scipy import signal

SAMPLE_RATE = 22050  # Hz, the rate of the whole project (docs/design.md §1.1).
PEAK = 0.99  # Peak after normalisation; < 1 so 16-bit FLAC never clips.
MAX_HOLD_SECONDS = 6.0  # Notes held longer are cut here: tones are cached at a fixed size.
TAIL_SECONDS = 0.3  # Longest release; tones are MAX_HOLD + TAIL long.
# Partials above are dropped: beyond the CQT's top bin (~7.9 kHz), and cheaper.
MAX_PARTIAL_HZ = 9000.0


def midi_to_hz(pitch):
  """MIDI note number(s) -> frequency in Hz (A4 = 69 = 440 Hz)."""
  return 440.0 * 2.0 ** ((np.asarray(pitch, np.float64) - 69.0) / 12.0)


def _partials(t, f0, amps, *, stretch=0.0, decays=(), onsets=None, vibrato=(0.0, 0.0),
              detune_cents=0.0, phase_seed=0):
  """Sum of harmonic partials.

  Args:
    t: [N] seconds.
    f0: fundamental in Hz.
    amps: [H] amplitude of partial h = 1..H.
    stretch: inharmonicity B: partial h sits at h*f0*sqrt(1 + B h^2) (piano strings).
    decays: () for sustained partials, or pairs (weight, [H] rates in 1/s): each
      partial's envelope is sum_k weight_k exp(-rate_k[h] t) (a piano's fast
      then slow decay is two pairs).
    onsets: [H] time constants in s of each partial's rise, or None: brass
      brightens during its attack because high partials rise later.
    vibrato: (rate Hz, depth as a fraction of the frequency).
    detune_cents: shifts every partial (ensemble voices).
    phase_seed: seeds the start phases, so chords are not phase-locked clicks.

  Returns:
    [N] float64 waveform.
  """
  amps = np.asarray(amps, np.float64)
  h = np.arange(1, len(amps) + 1, dtype=np.float64)
  f0 = f0 * 2.0 ** (detune_cents / 1200.0)
  ratios = h * np.sqrt(1.0 + stretch * h ** 2)
  keep = (ratios * f0 < MAX_PARTIAL_HZ) & (amps > 0)
  keep[0] = True  # The fundamental always sounds, even at the top of the range.
  phases = np.random.default_rng([phase_seed, 7]).uniform(0.0, 1.0, len(amps))
  rate, depth = vibrato
  # Integrated frequency of f(1 + depth*sin(2 pi rate t)): closed form, so each
  # sample depends on its own time only.
  tau = t if depth == 0 else t + depth / (2 * np.pi * rate) * (1.0 - np.cos(2 * np.pi * rate * t))
  # Cycles of the fundamental, reduced mod 1 in float64: float32 is then exact
  # enough for the phase of harmonic h (h * frac + phase), and its sin is ~15x
  # faster than float64's.
  base = f0 * tau
  frac = (base - np.floor(base)).astype(np.float32)
  t32 = t.astype(np.float32)
  two_pi = np.float32(2 * np.pi)
  out = np.zeros(len(t), np.float32)
  for i in np.flatnonzero(keep):
    n = len(t)
    if decays:
      # A decaying partial is only computed until it is 120 dB down: bright
      # partials of plucked tones vanish within milliseconds.
      slowest = min(rates[i] for _, rates in decays)
      n = min(n, int(np.searchsorted(t, 13.8 / max(slowest, 1e-9))) + 1)
    if stretch:  # Inharmonic: the partial's own cycles, reduced in float64.
      c = ratios[i] * base[:n] + phases[i]
      cycles = (c - np.floor(c)).astype(np.float32)
    else:
      cycles = np.float32(h[i]) * frac[:n] + np.float32(phases[i])
    partial = np.sin(two_pi * cycles)
    partial *= np.float32(amps[i])
    ti = t32[:n]
    if decays:
      partial *= sum(np.float32(w) * np.exp(np.float32(-rates[i]) * ti) for w, rates in decays)
    if onsets is not None:
      partial *= 1.0 - np.exp(-ti / np.float32(onsets[i]))
    out[:n] += partial
  return out.astype(np.float64)


def _attack(t, seconds):
  """Linear rise from 0 to 1 over `seconds`; [N] like t."""
  return np.minimum(t / seconds, 1.0)


def _noise(n, seed, low_hz, high_hz, sample_rate):
  """[N] band-passed white noise with unit standard deviation before the filter."""
  x = np.random.default_rng(seed).standard_normal(n)
  high_hz = min(high_hz, 0.45 * sample_rate)
  sos = signal.butter(2, [low_hz, high_hz], btype="band", fs=sample_rate, output="sos")
  return signal.sosfilt(sos, x)


# Each tone function: (t [N] s, midi pitch, sample_rate, seed) -> [N] float64.

def _organ(t, pitch, sr, seed):
  # Principal stops (8', 4', 2 2/3', 2', 1 3/5', 1'): odd and even partials, no
  # decay; a pipe organ holds its level until the key is released.
  amps = np.zeros(8)
  amps[[0, 1, 2, 3, 4, 7]] = [1.0, 0.7, 0.45, 0.4, 0.2, 0.2]
  return _attack(t, 0.03) * _partials(t, midi_to_hz(pitch), amps, phase_seed=seed)


def _piano(t, pitch, sr, seed):
  f0 = midi_to_hz(pitch)
  h = np.arange(1, 21)
  # Hammer struck near 1/8 of the string; spectrum falls about as 1/h^1.5.
  amps = np.abs(np.sin(np.pi * h / 8.0)) / h ** 1.5
  # Higher notes and higher partials die faster (shorter strings, air losses).
  base = 0.7 * 2.0 ** ((pitch - 60) / 18.0)
  fast = base * 3.0 * (1.0 + 0.3 * (h - 1))
  slow = base * 0.5 * (1.0 + 0.15 * (h - 1))
  stretch = 1.5e-4 * 2.0 ** ((pitch - 48) / 24.0)
  x = _partials(t, f0, amps, stretch=stretch, decays=((0.6, fast), (0.4, slow)), phase_seed=seed)
  thump = _noise(len(t), seed, 60.0, 2000.0, sr) * np.exp(-t / 0.008) * 0.3
  return _attack(t, 0.002) * x + thump


def _guitar(t, pitch, sr, seed):
  f0 = midi_to_hz(pitch)
  h = np.arange(1, 31)
  # Plucked near the bridge: a bright comb-shaped spectrum whose top decays first.
  amps = np.abs(np.sin(np.pi * h * 0.18)) / h
  decays = 1.2 * 2.0 ** ((pitch - 52) / 24.0) + 0.08 * h ** 1.6
  pluck = _noise(len(t), seed, 500.0, 6000.0, sr) * np.exp(-t / 0.004) * 0.2
  x = _partials(t, f0, amps, decays=((1.0, decays),), phase_seed=seed)
  return _attack(t, 0.001) * x + pluck


def _flute(t, pitch, sr, seed):
  f0 = midi_to_hz(pitch)
  # Nearly a sine; vibrato and breath noise that peaks at the attack ("chiff").
  tone = _partials(t, f0, [1.0, 0.22, 0.07, 0.03], vibrato=(5.0, 0.004), phase_seed=seed)
  breath = _noise(len(t), seed, 1000.0, 8000.0, sr) * (0.025 + 0.12 * np.exp(-t / 0.05))
  return (1.0 - np.exp(-t / 0.05)) * tone + _attack(t, 0.01) * breath


def _brass(t, pitch, sr, seed):
  f0 = midi_to_hz(pitch)
  h = np.arange(1, 25)
  # Bright, with a weak fundamental and a formant near 1.2 kHz (a trumpet's
  # bell); high partials enter later, so the attack brightens ("blare").
  amps = h ** -0.5 * (1.0 + 3.0 * np.exp(-((h * f0 - 1200.0) / 700.0) ** 2))
  amps[0] *= 0.5
  onsets = 0.008 + 0.006 * h
  env = 0.85 + 0.15 * np.exp(-t / 0.15)  # Slight fall from the attack to the sustain.
  return env * _partials(t, f0, amps, onsets=onsets, vibrato=(5.5, 0.002), phase_seed=seed)


def _clarinet(t, pitch, sr, seed):
  f0 = midi_to_hz(pitch)
  h = np.arange(1, 22)
  # Closed cylindrical bore: odd partials only (even ones almost absent).
  amps = np.where(h % 2 == 1, 1.0 / h, 0.02 / h)
  return (1.0 - np.exp(-t / 0.02)) * _partials(t, f0, amps, phase_seed=seed)


def _strings(t, pitch, sr, seed):
  f0 = midi_to_hz(pitch)
  h = np.arange(1, 25)
  amps = 1.0 / h  # Bowed string: Helmholtz motion, a sawtooth.
  # An ensemble: two slightly detuned sections with their own vibrato, slow bow attack.
  x = (_partials(t, f0, amps, vibrato=(5.3, 0.005), detune_cents=-5.0, phase_seed=seed)
       + _partials(t, f0, amps, vibrato=(6.1, 0.005), detune_cents=5.0, phase_seed=seed + 1))
  return (1.0 - np.exp(-t / 0.12)) * x * 0.5


@dataclasses.dataclass(frozen=True)
class Instrument:
  """One synthesizer voice.

  Attributes:
    name: label written to labels.csv.
    program: General MIDI program (0-based) of the nearest GM sound, used when
      rendering with a soundfont instead.
    family: GM programs (0-based) of the same kind of instrument: with a
      soundfont and `programs='family'`, each rendition plays one of them.
    release: seconds of fade after note-off.
    tone: (t [N] s, pitch, sample_rate, seed) -> [N] held tone.
  """
  name: str
  program: int
  family: tuple[int, ...]
  release: float
  tone: Callable[..., np.ndarray]


# Families: the GM family (8 programs) of each sound, but for strings, whose GM
# families also hold pizzicato, harp, timpani, choirs and an orchestra hit:
# there the bowed strings of the Strings and Ensemble families.
INSTRUMENTS = {i.name: i for i in [
    Instrument("organ", 19, tuple(range(16, 24)), 0.08, _organ),     # GM 20 Church Organ
    Instrument("piano", 0, tuple(range(0, 8)), 0.25, _piano),        # GM 1 Acoustic Grand
    Instrument("guitar", 24, tuple(range(24, 32)), 0.15, _guitar),   # GM 25 Nylon Guitar
    Instrument("flute", 73, tuple(range(72, 80)), 0.10, _flute),     # GM 74 Flute; Pipe
    Instrument("brass", 56, tuple(range(56, 64)), 0.08, _brass),     # GM 57 Trumpet
    Instrument("clarinet", 71, tuple(range(64, 72)), 0.06, _clarinet),  # GM 72 Clarinet; Reed
    Instrument("strings", 48, (40, 41, 42, 43, 44, 48, 49, 50, 51), 0.25,
               _strings),                                            # GM 49 String Ensemble 1
]}


@functools.lru_cache(maxsize=384)  # ~0.55 MB each at 22.05 kHz: at most ~210 MB.
def tone(instrument: str, pitch: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """The held tone of one note, before any release.

  Returns:
    [round((MAX_HOLD_SECONDS + TAIL_SECONDS) * sample_rate)] float32, read-only,
    unnormalised (partials sum to about 1 at the attack).
  """
  inst = INSTRUMENTS[instrument]
  n = int(round((MAX_HOLD_SECONDS + TAIL_SECONDS) * sample_rate))
  t = np.arange(n, dtype=np.float64) / sample_rate
  seed = zlib.crc32(instrument.encode()) * 128 + int(pitch)
  x = inst.tone(t, int(pitch), sample_rate, seed).astype(np.float32)
  x.flags.writeable = False
  return x


@functools.lru_cache(maxsize=64)
def _release_ramp(n: int) -> np.ndarray:
  """[n] float32 fade from 1 towards 0, quadratic so the end has no corner."""
  return ((1.0 - np.arange(n) / n) ** 2).astype(np.float32)


def peak_normalise(x: np.ndarray, peak: float = PEAK) -> np.ndarray:
  """Scales [N] audio so that max |x| = peak; silence stays silence. Returns float32."""
  m = float(np.max(np.abs(x))) if x.size else 0.0
  return (x * (peak / m) if m > 0 else x).astype(np.float32)


def render_notes(notes, instrument: str, sample_rate: int = SAMPLE_RATE,
                 seconds: float | None = None, peak: float | None = PEAK) -> np.ndarray:
  """Renders notes with one instrument.

  Args:
    notes: [N, 4] array-like of (start s, end s, MIDI pitch, velocity 1..127).
    instrument: a key of INSTRUMENTS.
    sample_rate: Hz.
    seconds: length of the output; default: last note-off plus release.
      Notes that start later are dropped, ones that run past are cut.
    peak: peak-normalise to this value, or None to keep the raw level.

  Returns:
    [round(seconds * sample_rate)] float32 mono waveform.
  """
  inst = INSTRUMENTS[instrument]
  notes = np.asarray(notes, np.float64).reshape(-1, 4)
  # A fixed summation order makes the result independent of the input order.
  notes = notes[np.lexsort(notes.T[::-1])]
  if seconds is None:
    seconds = (notes[:, 1].max() if len(notes) else 0.0) + inst.release
  n = int(round(seconds * sample_rate))
  out = np.zeros(n, np.float64)
  r = max(int(round(inst.release * sample_rate)), 1)
  ramp = _release_ramp(r)
  max_hold = int(round(MAX_HOLD_SECONDS * sample_rate))
  for start, end, pitch, velocity in notes:
    s = int(round(start * sample_rate))
    if s >= n:
      continue
    held = min(max(int(round((end - start) * sample_rate)), 1), max_hold)
    x = tone(instrument, int(pitch), sample_rate)
    gain = velocity / 127.0
    a = min(held, n - s)
    out[s:s + a] += gain * x[:a]
    b = min(r, n - s - held)
    if b > 0:
      out[s + held:s + held + b] += gain * (x[held:held + b] * ramp[:b])
  return peak_normalise(out, peak) if peak is not None else out.astype(np.float32)


def midi_notes(pm) -> np.ndarray:
  """[N, 4] (start s, end s, pitch, velocity) of all pitched notes of a pretty_midi.PrettyMIDI."""
  rows = [(n.start, n.end, n.pitch, n.velocity)
          for inst in pm.instruments if not inst.is_drum for n in inst.notes]
  return np.asarray(rows, np.float64).reshape(-1, 4)


def render_midi(pm, instrument: str, sample_rate: int = SAMPLE_RATE,
                seconds: float | None = None, peak: float | None = PEAK) -> np.ndarray:
  """Renders every pitched note of a pretty_midi.PrettyMIDI with one instrument.

  Returns:
    [round(seconds * sample_rate)] float32 mono waveform (see render_notes).
  """
  return render_notes(midi_notes(pm), instrument, sample_rate, seconds, peak)


def instrument_names() -> Sequence[str]:
  """Names of the synthesizer's instruments, in a fixed order."""
  return tuple(INSTRUMENTS)
