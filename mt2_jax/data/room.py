"""Recording conditions: each rendition heard through its own room and microphone.

`mt2 corpus --room=S` (S > 0) passes every chorale rendition through a chain
drawn for it alone (mt2_jax/data/corpus.py seeds it by the corpus seed and the
file name): a low shelf at 250 Hz and a high shelf at 3 kHz of +-9 dB, three
resonances (150 Hz - 6 kHz, log-uniform; +-12 dB; Q 0.7-3) for the
microphone and the room's colour, a reverb (pedalboard's Freeverb: room size,
damping and wet level drawn) and white noise 20-40 dB below the signal. S
scales every gain, the wet level and the noise; 1 is the range above.

Why (docs/experiments.md, "Session 9"): the dry synthesizer gives each
instrument one fixed spectrum, so MFCC statistics name the instrument of a
rendition almost perfectly (0.98 on the demo's test chorales) and an
instrument probe cannot tell a learned feature from a hand-made one. Real
recordings of one instrument differ in microphone, room and noise. Measured:
MFCC statistics still read 0.94 through these chains, and the learned
features lose far more, so the demo keeps the dry audio (`mt2 demo --preset
rooms` runs it on these).

The effects are pedalboard's (Spotify's wrapper of JUCE's filters and
reverb): deterministic, and ~0.1 s for a 20-s rendition.
"""

import dataclasses

import numpy as np

LOW_SHELF_HZ, HIGH_SHELF_HZ = 250.0, 3000.0
SHELF_DB, PEAK_DB = 9.0, 12.0  # Largest boost or cut at strength 1.
PEAKS, PEAK_HZ, PEAK_Q = 3, (150.0, 6000.0), (0.7, 3.0)
WET = (0.05, 0.4)
SNR_DB = (20.0, 40.0)


@dataclasses.dataclass(frozen=True)
class Room:
  """One rendition's recording chain (see the module docstring)."""
  low_shelf_db: float
  high_shelf_db: float
  peaks: tuple[tuple[float, float, float], ...]  # (centre Hz, gain dB, Q) each.
  room_size: float
  damping: float
  wet: float
  noise_db: float  # Noise level relative to the signal's RMS (negative; -inf: none).
  noise_seed: int


def draw_room(rng: np.random.Generator, strength: float = 1.0) -> Room:
  """A random Room; strength scales gains, wet level and noise (0: a dry, silent chain)."""
  if strength < 0:
    raise ValueError(f"room strength must be >= 0, got {strength}")
  low, high = rng.uniform(-SHELF_DB, SHELF_DB, 2) * strength
  peaks = []
  for _ in range(PEAKS):
    hz = np.exp(rng.uniform(*np.log(PEAK_HZ)))  # Log-uniform centre.
    db = rng.uniform(-PEAK_DB, PEAK_DB) * strength
    peaks.append((float(hz), float(db), float(rng.uniform(*PEAK_Q))))
  room_size, damping, wet = rng.uniform(0.1, 0.9), rng.uniform(0.2, 0.8), rng.uniform(*WET)
  snr = rng.uniform(*SNR_DB)
  noise_db = -snr + 20 * np.log10(strength) if strength > 0 else -np.inf
  return Room(float(low), float(high), tuple(peaks), float(room_size), float(damping),
              float(wet * strength), float(noise_db), int(rng.integers(2**31)))


def apply_room(x: np.ndarray, room: Room, sample_rate: int) -> np.ndarray:
  """[T] audio heard through `room`: [T] float32, same length, not normalised."""
  import pedalboard  # pylint: disable=g-import-not-at-top
  fx = [pedalboard.LowShelfFilter(LOW_SHELF_HZ, room.low_shelf_db, 0.7),
        pedalboard.HighShelfFilter(HIGH_SHELF_HZ, room.high_shelf_db, 0.7)]
  fx += [pedalboard.PeakFilter(hz, db, q) for hz, db, q in room.peaks]
  # JUCE's reverb doubles its dry level (and triples its wet one): the halves
  # make a chain of strength 0 the identity.
  fx.append(pedalboard.Reverb(room_size=room.room_size, damping=room.damping, width=0.0,
                              wet_level=room.wet / 2, dry_level=(1.0 - room.wet / 2) / 2))
  y = pedalboard.Pedalboard(fx)(np.asarray(x, np.float32), sample_rate).astype(np.float64)
  if np.isfinite(room.noise_db):
    rms = np.sqrt(np.mean(y ** 2))
    noise = np.random.default_rng(room.noise_seed).standard_normal(len(y))
    y += noise * rms * 10.0 ** (room.noise_db / 20.0)
  return y.astype(np.float32)
