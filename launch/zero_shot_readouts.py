"""The zero-shot key-signature readouts of runs' equivariant heads, side by side (docs/experiments.md).

  .venv/bin/python launch/zero_shot_readouts.py --corpus mt2_demo/corpus RUN [RUN ...]

For each run (a workdir that `mt2 demo`, `mt2 probe` or launch/seed_findings.py
has probed on --corpus, so that its probe_cache/ holds the head profiles),
prints the key-signature accuracy on the validation and test chorales of
three readouts, each with its rotation fitted on the training chorales:
STONE's argmax with one of 12 class rotations; the phase of z with one of 12
class rotations (the readout before session 21); the phase of z turned by a
real angle (keys.fit_rotation, the readout since session 21), and that
angle in steps of 2 pi / 12. A turn near a half step is where the two phase
readouts part.
"""

import argparse
import os
import pathlib
import sys


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--corpus", required=True, help="the labelled folder the runs were probed on")
  p.add_argument("--head", default="head_cpsd")
  p.add_argument("runs", nargs="+")
  a = p.parse_args(argv)
  sys.path.insert(0, os.fspath(pathlib.Path(__file__).resolve().parent.parent))
  import numpy as np
  from mt2_jax import keys
  from mt2_jax.eval import probe
  rows = probe.read_examples(a.corpus)
  task = probe.task_data("key", rows)
  fingerprint = probe.data_fingerprint(a.corpus, rows)
  sig = np.array([keys.key_signature(int(c)) for c in task.y])
  train = task.split == "train"
  print("run | turn | validation: argmax / phase, 12 rotations / phase, real turn | test: the same")
  for run in a.runs:
    caches = sorted(pathlib.Path(run, "probe_cache").glob(f"features_step*_{fingerprint}.npz"))
    if not caches:
      sys.exit(f"{run}: no probe_cache/features_step*_{fingerprint}.npz; probe it on {a.corpus} first")
    x = np.load(caches[-1])[a.head][task.index]
    argmax = keys.read_signatures(x, keys.fit_rotation(x[train], sig[train]))
    old = keys.phase_class(x)
    old = (old + keys.best_rotation(old[train], sig[train])) % 12
    turn = keys.fit_rotation(x[train], sig[train], "phase")
    phase = keys.read_signatures(x, turn, "phase")
    cells = [" / ".join(f"{np.mean(r[task.split == s] == sig[task.split == s]):.2f}"
                        for r in (argmax, old, phase)) for s in ("validation", "test")]
    print(f"{pathlib.Path(run).name} | {turn:+.2f} | {cells[0]} | {cells[1]}")


if __name__ == "__main__":
  main()
