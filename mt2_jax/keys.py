"""Music facts: pitch-class names, keys, key signatures, the circle-of-fifths readouts.

The one home of these facts for every stage: training's zero-shot eval
(mt2_jax/train/diagnostics.py) and the probes (mt2_jax/eval/) read keys and
key-signature profiles with the same functions. Pure numpy (and mir_eval to
parse key names); nothing here imports mt2_jax.

Conventions:
  pitch class  0..11, C = 0, spelt PITCH_NAMES[pc] (one spelling each, all
               accepted by mir_eval).
  key class    2 * tonic + (mode == minor), 0..23: C major, C minor, C# major...
  key signature  the tonic of the key's relative major, 0..11: a key and its
               relative minor/major share one (C major and A minor: 0).
  profile      [12] key-signature profile of an equivariant (CPSD) head; its
               class index sits on an arbitrary rotation of the key signatures.
"""

import numpy as np

PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
NUM_PITCH_CLASSES = len(PITCH_NAMES)
# How a head's profile becomes a key signature: STONE's peak, or the angle of
# its z on CPSD's circle (phase_class); each after one rotation (fit_rotation).
ZERO_SHOT_READOUTS = ("argmax", "phase")


def key_class(label: str) -> int:
  """'F# minor' -> 2 * tonic + (mode == minor), in [0, 24)."""
  import mir_eval  # Late: only key parsing needs it.
  tonic, mode = mir_eval.key.split_key_string(label)
  return 2 * int(tonic) + int(mode == "minor")


def key_name(index: int) -> str:
  """Inverse of key_class, spelt as mir_eval accepts."""
  return f"{PITCH_NAMES[index // 2]} {'minor' if index % 2 else 'major'}"


def key_signature(index: int) -> int:
  """Key class -> the tonic of its relative major (the key signature), 0..11."""
  tonic, minor = index // 2, index % 2
  return (tonic + 3 * minor) % 12


def has_phase_readout(omega: float) -> bool:
  """Whether phase_class can read a head trained at omega: omega * 12 coprime to 12."""
  return round(omega * 12) in (1, 5, 7, 11)


def _z(profiles: np.ndarray, omega: float) -> np.ndarray:
  """Each profile's point z on CPSD's circle: [n, 12] -> complex [n]."""
  return profiles @ np.exp(2j * np.pi * omega * np.arange(NUM_PITCH_CLASSES))


def phase_class(profiles: np.ndarray, omega: float = 7 / 12, turn: float = 0.0) -> np.ndarray:
  """The class whose point on CPSD's circle is nearest to the profile's z: [n, 12] -> int [n].

  z = sum_q y[q] exp(2j pi omega q) is all that CPSD trains; the class q sits at
  angle 2 pi omega q. With omega = m/12 (m coprime to 12), the nearest of the
  12 angles is step k = round(12 angle / 2 pi) and q = k m^-1 mod 12. turn
  (in steps) turns every z first (fit_rotation's phase rotation).
  """
  m = round(omega * 12)
  inverse = pow(m, -1, 12)  # ValueError when m shares a factor with 12 (no readout).
  k = np.round(np.angle(_z(profiles, omega)) * 12 / (2 * np.pi) + turn).astype(np.int64)
  return (k * inverse) % 12


def best_rotation(peak: np.ndarray, signature: np.ndarray) -> int:
  """The r in 0..11 for which (peak + r) mod 12 matches `signature` most often (ties: smallest).

  The head's class index sits on an arbitrary rotation of the key signatures.
  peak, signature: int [n].
  """
  return int(np.argmax([np.sum((peak + r) % 12 == signature) for r in range(12)]))


def fit_rotation(profiles: np.ndarray, signature: np.ndarray, readout: str = "argmax",
                 omega: float = 7 / 12) -> float:
  """The one rotation that puts a head's readout on key signatures, fitted on these tracks.

  'argmax': STONE's, the best of the 12 class rotations (best_rotation).
  'phase': a real turn of z (in steps of 2 pi / 12), the circular mean of the
  angle from each track's z to its signature's point on the circle. CPSD is
  blind to any common turn of z, not only to the 12 that permute the classes,
  so a trained head's z can sit anywhere between the class points; half a
  step off, an integer rotation reads half the tracks one class away
  (docs/experiments.md, session 21).
  profiles: [n, 12]; signature: int [n] 0..11.
  """
  if readout not in ZERO_SHOT_READOUTS:
    raise ValueError(f"readout must be one of {ZERO_SHOT_READOUTS}, got {readout!r}")
  if readout == "argmax":
    return float(best_rotation(profiles.argmax(1), signature))
  target = np.exp(2j * np.pi * omega * np.asarray(signature))
  z = _z(profiles, omega)
  # Each track votes with a unit vector, so a few confident profiles do not dominate.
  turn = np.angle(np.sum(target * np.conj(z) / np.maximum(np.abs(z), 1e-12)))
  return float(turn * NUM_PITCH_CLASSES / (2 * np.pi))


def read_signatures(profiles: np.ndarray, rotation: float, readout: str = "argmax",
                    omega: float = 7 / 12) -> np.ndarray:
  """A head's key signature of each profile, with fit_rotation's rotation: [n, 12] -> int [n].

  'argmax' is STONE's (the peak, rotated); 'phase' reads the angle of z on
  CPSD's circle (`phase_class`), which is what CPSD constrains: a profile can
  turn its z with the transposition while its peak does not follow.
  """
  if readout not in ZERO_SHOT_READOUTS:
    raise ValueError(f"readout must be one of {ZERO_SHOT_READOUTS}, got {readout!r}")
  if readout == "argmax":
    return (profiles.argmax(1) + int(rotation)) % NUM_PITCH_CLASSES
  return phase_class(profiles, omega, rotation)


__all__ = ["NUM_PITCH_CLASSES", "PITCH_NAMES", "ZERO_SHOT_READOUTS", "best_rotation", "fit_rotation",
           "has_phase_readout", "key_class", "key_name", "key_signature", "phase_class",
           "read_signatures"]
