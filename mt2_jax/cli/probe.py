"""`mt2 probe`: linear probes on frozen features of a run (docs/design.md §1.6).

  mt2 probe --workdir=RUN --data DIR --task key,chorale_instrument [--out REPORT_DIR]

DIR is a labelled audio folder (labels.csv beside the audio, as `mt2 corpus`
writes it); its `split` column decides: train fits the probe, validation
stops it early, test alone is scored. Tasks: key (MIREX weighted score and
key-signature accuracy), instrument (the note set), chorale_instrument (whole
chorales), pitch (the note set, split by instrument). Besides the run's
features (each class token, their mean, the mean sequence token): the
zero-shot readout of its equivariant head, the same probes on an untrained
model (--untrained), the Krumhansl-Kessler chroma template and MFCC stats.
Every score comes with a 95% bootstrap interval over test tracks. The
protocol is in mt2_jax/eval/probe.py.

Features are cached in RUN/probe_cache/. Results go to RUN/probe/ (or --out):
results.json, results.md (rows model x feature, columns tasks) and probe.png.
"""

from typing import Sequence

from absl import app
from absl import flags

from mt2_jax import storage
from mt2_jax.eval import probe

flags.DEFINE_string("workdir", None, "Training run folder (config.json + checkpoints).",
                    allow_override=True)
flags.DEFINE_string("data", None, "Labelled audio folder (labels.csv beside the audio).",
                    allow_override=True)
flags.DEFINE_list("task", ["key"], f"Tasks, comma-separated: {', '.join(probe.TASKS)}.",
                  allow_override=True)
flags.DEFINE_string("out", None, "Report folder (default: WORKDIR/probe).", allow_override=True)
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", allow_override=True)
flags.DEFINE_bool("untrained", True, "Also probe a randomly initialised model.",
                  allow_override=True)
FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for name in ("workdir", "data"):
    if not FLAGS[name].value:
      raise app.UsageError(f"--{name} is required: mt2 probe --workdir=RUN --data DIR --task key")
  tasks = list(FLAGS.task)
  for t in tasks:
    if t not in probe.TASKS:
      raise app.UsageError(f"--task: unknown {t!r}; known: {', '.join(probe.TASKS)}")
  results = probe.probe_run(FLAGS.workdir, FLAGS.data, tasks, step=FLAGS.step,
                            untrained=FLAGS.untrained)
  paths = probe.write_report(results, FLAGS.out or storage.path(FLAGS.workdir) / "probe")
  print(probe.markdown(results))
  print(f"results: {paths['markdown']}, {paths['json']}; chart: {paths['chart']}")
