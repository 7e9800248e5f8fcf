"""`mt2 demo`: the whole pipeline on the built-in corpus, at CPU size, from scratch.

  mt2 demo                      # ./mt2_demo, about 25 minutes on a 2-core CPU
  mt2 demo --out /tmp/d --preset smoke   # about a minute: the test suite's run
  mt2 demo --out /tmp/r --preset rooms   # the same on recordings of varied rooms (--room 1)
  mt2 demo --out /tmp/g --preset gm      # played by a GM soundfont, several programs per instrument

Renders the Bach-chorale corpus, prepares the CQT dataset of its training
split, pretrains MT2 and the two single-token baselines, probes every run on
key, instrument and chorale_instrument with the references (untrained MT2,
zero-shot head, Krumhansl-Kessler chroma, MFCC stats), and prints one table
and the paper's findings. Each stage is skipped when a previous run finished
it. The stages and outputs are in mt2_jax/demo.py.
"""

import os
import pathlib
from typing import Sequence

from absl import app
from absl import flags

from mt2_jax import demo
from mt2_jax import host

flags.DEFINE_string("out", None, "Output folder for everything (default: ./mt2_demo).",
                    allow_override=True)
flags.DEFINE_enum("preset", "default", list(demo.PRESETS),
                  "CPU-sized run; the same on recordings of varied rooms (rooms) or played by a"
                  " GM soundfont with several programs per instrument (gm); or the ~1-minute"
                  " smoke test.", allow_override=True)
flags.DEFINE_bool("smallest", False, "Same as --preset=smoke.", allow_override=True)
FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.out and "://" in FLAGS.out:
    raise app.UsageError("--out must be a local folder (the demo renders audio and links files "
                         "with local tools); copy it to a bucket afterwards")
  from mt2_jax.eval import probe
  preset = "smoke" if FLAGS.smallest else FLAGS.preset
  if preset in demo.PRESETS:  # Else run_demo names the presets.
    from mt2_jax.train import step as train_step
    config = demo.run_config("mt2", demo.PRESETS[preset], "")
    host.use_cpu_cores(config.batch_size, train_step.tokens_per_track(config))
  out = FLAGS.out or "mt2_demo"
  done = demo.run_demo(out, preset)
  print()
  print(probe.markdown(done["results"]))
  print("key: MIREX weighted score on the test chorales; key signature: accuracy "
        "(the only score of the zero-shot head readout); instrument: accuracy on test notes; "
        "chorale instrument: accuracy on test chorales. [lo-hi]: 95% bootstrap interval over "
        "test tracks.")
  print()
  print(probe.findings_markdown(done["findings"]))
  print(f"wall time: {done['timings']}")
  print(f"outputs in {pathlib.Path(out).absolute()}:")
  for k in ("markdown", "json", "chart", "losses", "timings"):
    print(f"  {done['paths'][k]}")
  print(f"  runs: {', '.join(os.fspath(w) for w in done['workdirs'].values())}")
