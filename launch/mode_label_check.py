"""How often does S-KEY's mode pseudo-label read the right mode? (docs/experiments.md, session 8)

  .venv/bin/python launch/mode_label_check.py --data mt2_demo/data_val [--split validation]

S-KEY (deezer/skey) trains the mode with a label made from the input: given
a key signature, is the major tonic's pitch class louder than the relative
minor tonic's in the track's octave-folded CQT? This scores that label
against the true mode of labelled tracks of a prepared dataset, given the
*true* key signature (its best case: a model's own key signature can only be
worse), and given the signature a diatonic template reads from the same
chroma. Energies are the stored log-compressed CQT, and its power
(10^(db/10)) as a second reading.
"""

import argparse
import os
import pathlib
import sys

import numpy as np

MAJOR_SCALE = np.array([0, 2, 4, 5, 7, 9, 11])
A = 9  # Pitch class of the CQT's first bin (A0), with C = 0.


def chroma(cqt: np.ndarray, n_bins: int = 84) -> np.ndarray:
  """[bins, T] CQT from A0, 12 bins per octave -> [12] time-mean chroma, C = 0."""
  folded = cqt[:n_bins].mean(1).reshape(-1, 12).sum(0)  # Index j: pitch class A + j.
  return np.roll(folded, A)


def mode_label(u: np.ndarray, signature: int) -> int:
  """1 (minor) when the relative minor tonic (signature + 9) is louder than the major tonic."""
  return int(u[(signature + 9) % 12] > u[signature])


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", required=True, help="prepared dataset with a `key` column")
  p.add_argument("--split", default="validation")
  a = p.parse_args(argv)
  sys.path.insert(0, os.fspath(pathlib.Path(__file__).resolve().parent.parent))
  from mt2_jax import keys
  from mt2_jax.data import dataset
  source = dataset.open_split(a.data, a.split)
  hits, n, minors = {}, 0, 0
  for i in range(len(source)):
    example = source[i]
    key = example["key"]
    key = key.decode() if isinstance(key, bytes) else str(key)
    if not key:
      continue
    c = keys.key_class(key)
    minor, signature = c % 2, keys.key_signature(c)
    minors += minor
    db = np.asarray(example["cqt"], np.float64)
    for energy, cqt in (("log", db), ("power", 10.0 ** (db / 10.0))):
      u = chroma(cqt)
      read = int(np.argmax([u[(s + MAJOR_SCALE) % 12].sum() for s in range(12)]))
      for name, value in ((f"{energy}: signature read by a diatonic template", read == signature),
                          (f"{energy}: mode label, true signature", mode_label(u, signature) == minor),
                          (f"{energy}: mode label, read signature", mode_label(u, read) == minor)):
        hits[name] = hits.get(name, 0) + bool(value)
    n += 1
  print(f"{n} labelled tracks in {a.data} ({a.split}), {minors} in minor keys "
        f"(always answering the commoner mode: {max(minors, n - minors) / n:.2f})")
  for name, h in hits.items():
    print(f"  {name}: {h}/{n} = {h / n:.2f}")


if __name__ == "__main__":
  main()
