"""The whole pipeline on the built-in corpus, at CPU size, from scratch: `run_demo`.

`mt2 demo` (mt2_jax/cli/demo.py) runs it and prints the table:

  mt2 demo                      # ./mt2_demo, about 25 minutes on a 2-core CPU
  mt2 demo --out /tmp/d --preset smoke   # about a minute: the test suite's run
  mt2 demo --out /tmp/r --preset rooms   # the default on recordings of varied rooms
  mt2 demo --out /tmp/g --preset gm      # the default played by a GM soundfont, programs per family

Stages, each skipped when a previous run finished it:
  1. corpus    Bach chorales and single notes rendered to labelled audio
               (mt2_jax.data.corpus) in OUT/corpus.
  2. prepare   the CQT dataset of the *training split's* chorales only
               (OUT/data), so that no model has heard the audio it is probed
               on, and of the validation split's (OUT/data_val, labelled).
  3. train     MT2 and the two single-token baselines (configs/mt2.py,
               contrastive_only.py, equivariant_only.py at `runlocal` plus the
               preset's steps and batch) in OUT/runs/<name>; a run whose
               checkpoint at total_steps exists is not trained again, a
               partial one resumes, one trained with other settings (an
               older version's defaults) moves to OUT/runs/<name>.old<i>.
               Runs with an equivariant head log its zero-shot
               key-signature accuracy on OUT/data_val 6 times.
  4. probe     linear probes of every feature of every run on key (chorales),
               instrument (single notes) and chorale_instrument (whole
               chorales), the untrained-MT2 and MFCC-stats references, the
               zero-shot key-signature readout of the equivariant head and
               the Krumhansl-Kessler chroma template for key
               (mt2_jax.eval.probe.probe_runs), each score with a 95% bootstrap
               interval over test tracks; features are cached in each run's
               probe_cache/.
Outputs: OUT/results.md and results.json (the table printed at the end, with
the paper's findings checked below it: probe.findings), OUT/probe.png (bar
chart), OUT/losses.png (training curves from each run's
metrics.jsonl), OUT/timings.json (wall time per stage).
"""

import dataclasses
import importlib.util
import json
import os
import pathlib
import time
from typing import Any

from absl import logging

RUNS = ("mt2", "contrastive_only", "equivariant_only")  # The first gives the probes' references.
TASKS = ("key", "instrument", "chorale_instrument")


@dataclasses.dataclass(frozen=True)
class Preset:
  """What a demo renders, trains and probes."""
  corpus: dict
  steps: int
  batch_size: int
  config_arg: str = "runlocal"
  warmup_steps: int = 50
  lr: float = 1e-3
  workers: int = 2  # corpus and prepare processes (spawned: ~2 s each to start)
  evals: int = 6  # Zero-shot evals on the validation chorales while training (0: none).

  @property
  def eval_every(self) -> int:
    """Steps between zero-shot evals; 0 (none) when the run is shorter than `evals`
    steps (the smoke test: 4 steps, and 2 validation chorales to score)."""
    return self.steps // self.evals if self.evals else 0


# 260 pieces: 50 test chorales (25 pieces x 2 renditions), so that one track
# moves a score by 0.02; 420 training renditions x 20 s (140 minutes of audio)
# for pretraining.
_DEFAULT = Preset(
    corpus=dict(num_pieces=260, variants_per_piece=2, max_seconds=20.0,
                note_range=(36, 84), note_seconds=2.0),
    # Width 96 = 12 pitch classes x 4 channels + 48 dense (the hybrid
    # embedding); at 48 MT2's CPSD and NT-Xent were worse (docs/experiments.md).
    steps=1200, batch_size=16, config_arg="runlocal,model.width=96")
PRESETS = {
    "default": _DEFAULT,
    # The same on recordings: each chorale rendition through its own random EQ,
    # reverb and noise (`mt2 corpus --room 1`; docs/experiments.md, session 9).
    "rooms": dataclasses.replace(_DEFAULT, corpus={**_DEFAULT.corpus, "room": 1.0}),
    # The same played by pretty_midi's GM soundfont, each rendition with a
    # program drawn from its instrument's GM family (`mt2 corpus --soundfont gm
    # --programs family`): several timbres per instrument label.
    "gm": dataclasses.replace(_DEFAULT, corpus={**_DEFAULT.corpus, "soundfont": "gm",
                                                "programs": "family"}),
    "smoke": Preset(
        corpus=dict(num_pieces=10, variants_per_piece=2, max_seconds=8.0,
                    instruments=("organ", "piano", "flute"), note_range=(55, 66), note_seconds=1.0),
        steps=4, batch_size=8, warmup_steps=1, workers=1),  # 8: the test suite has 8 CPU devices.
}


def _config_file(name: str) -> pathlib.Path:
  return pathlib.Path(__file__).resolve().parent.parent / "configs" / f"{name}.py"


def run_config(name: str, preset: Preset, data_dir, eval_dir=None):
  """configs/<name>.py:<preset.config_arg> plus the preset's steps and batch.

  eval_dir: a prepared dataset of validation chorales; runs with an
  equivariant head then log its zero-shot key-signature accuracy on it every
  `preset.eval_every` steps (config.eval).
  """
  path = _config_file(name)
  if path.exists():
    spec = importlib.util.spec_from_file_location(f"mt2_demo_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(preset.config_arg)
  else:  # An installed package has no configs/: the same recipes, inline.
    from mt2_jax import config_defaults
    config = config_defaults.base_config()
    if name == "contrastive_only":
      config.model.class_tokens = ("contrastive",)
      del config.losses["cpsd"]
    elif name == "equivariant_only":
      config.model.class_tokens = ("equivariant",)
      del config.losses["ntxent"]
    config = config_defaults.apply_arg(config, preset.config_arg)
  config.data_dir = os.fspath(data_dir)
  config.total_steps = preset.steps
  config.batch_size = preset.batch_size
  config.checkpoint_every = preset.steps  # One checkpoint, at the end.
  config.log_every = max(1, min(config.log_every, preset.steps // 40 or 1))
  config.optim.warmup_steps = min(preset.warmup_steps, max(preset.steps - 1, 0))
  config.optim.lr = preset.lr
  if eval_dir and preset.eval_every and any(l.kind == "cpsd" for l in config.losses.values()):
    config.eval.data_dir = os.fspath(eval_dir)
    config.eval.every = preset.eval_every
  return config


def _done(marker: pathlib.Path, settings: dict) -> bool:
  return marker.exists() and json.loads(marker.read_text()) == settings


def _mark(marker: pathlib.Path, settings: dict) -> None:
  marker.write_text(json.dumps(settings, sort_keys=True))


def stage_corpus(out: pathlib.Path, preset: Preset, progress: bool) -> pathlib.Path:
  from mt2_jax.data import corpus
  corpus_dir = out / "corpus"
  settings = {k: list(v) if isinstance(v, tuple) else v for k, v in preset.corpus.items()}
  # A folder whose labels an older version wrote is done again: the audio is
  # found and kept, labels.csv is rewritten.
  settings["labels_version"] = corpus.LABELS_VERSION
  marker = corpus_dir / ".demo_done.json"
  if not _done(marker, settings):
    corpus.make_corpus(os.fspath(corpus_dir), num_workers=preset.workers, progress=progress,
                       **preset.corpus)
    _mark(marker, settings)
  return corpus_dir


def stage_prepare(out: pathlib.Path, corpus_dir: pathlib.Path, workers: int,
                  progress: bool, split: str = "train") -> pathlib.Path:
  """One split's chorales, linked into a folder, -> a prepared dataset.

  The training split's are linked into OUT/pretrain_audio -> OUT/data,
  unlabelled; the validation split's into OUT/val_audio -> OUT/data_val, with
  their labels (a labels.csv beside the links), whose `key` the zero-shot eval
  scores while training.
  """
  import csv
  from mt2_jax.data import prepare
  names = {"train": ("pretrain_audio", "data"), "validation": ("val_audio", "data_val")}
  audio_dir, data_dir = (out / name for name in names[split])
  if (data_dir / "_parts" / "plan.json").exists() and (data_dir / "rejected.csv").exists():
    return data_dir  # Complete (prepare writes rejected.csv last).
  audio_dir.mkdir(parents=True, exist_ok=True)
  with open(corpus_dir / "labels.csv", newline="") as f:
    reader = csv.DictReader(f)
    rows = [r for r in reader if r["set"] == "chorale" and r["split"] == split]
  for row in rows:
    link = audio_dir / pathlib.Path(row["file"]).name
    if not link.exists():
      link.symlink_to((corpus_dir / row["file"]).resolve())
  if split != "train":  # Training needs no labels; earlier demos' OUT/data stay valid.
    with open(audio_dir / "labels.csv", "w", newline="") as f:
      writer = csv.DictWriter(f, reader.fieldnames)
      writer.writeheader()
      writer.writerows({**r, "file": pathlib.Path(r["file"]).name} for r in rows)
  summary = prepare.prepare(audio_dir, data_dir, num_workers=workers, progress=progress)
  if not summary.complete or not summary.total_records:
    raise RuntimeError(f"prepare did not finish: {summary}")
  return data_dir


def stage_train(out: pathlib.Path, preset: Preset, data_dir, progress: bool,
                eval_dir=None) -> dict[str, pathlib.Path]:
  """Trains (or resumes) every run of RUNS on data_dir; eval_dir as in run_config."""
  from mt2_jax.train import checkpoint
  workdirs = {}
  for name in RUNS:
    workdir = out / "runs" / name
    workdirs[name] = workdir
    config = run_config(name, preset, data_dir, eval_dir)
    if (workdir / "config.json").exists():
      changes = checkpoint.config_changes(checkpoint.load_config(workdir), config,
                                          ignore=("data_dir", "eval.data_dir", "data.num_workers"))
      if changes:  # Other defaults, e.g. a newer version: train anew, keep the old run.
        i = 1
        while workdir.with_name(f"{name}.old{i}").exists():
          i += 1
        old = workdir.with_name(f"{name}.old{i}")
        workdir.rename(old)
        print(f"demo: {name}'s settings changed ({'; '.join(changes)}); its run moved to {old}",
              flush=True)
    if workdir.exists():
      ckpt = checkpoint.Checkpointer(workdir)
      latest = ckpt.latest_step()
      ckpt.close()
      if latest is not None and latest >= config.total_steps:
        logging.info("demo: %s already trained (step %d)", name, latest)
        continue
    from mt2_jax.train import loop as train  # Imported late: it is the heaviest module.
    print(f"demo: training {name} for {config.total_steps} steps -> {workdir}", flush=True)
    train.train(config, os.fspath(workdir), progress=progress)
  return workdirs


def stage_probe(workdirs: dict, corpus_dir, progress: bool) -> list[dict[str, Any]]:
  """Every run's probes on TASKS, then the references (untrained MT2, KK chroma, MFCC stats).

  workdirs: {name: run folder} in RUNS order; the first (mt2) gives the references.
  """
  from mt2_jax.eval import probe
  return probe.probe_runs(workdirs, corpus_dir, TASKS, progress=progress)


def plot_losses(workdirs: dict, path) -> None:
  """Loss curves (total and each term) of every run from its metrics.jsonl."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  curves = {}
  for name, workdir in workdirs.items():
    metrics = pathlib.Path(workdir) / "metrics.jsonl"
    if metrics.exists():
      lines = [json.loads(l) for l in metrics.read_text().splitlines() if l.strip()]
      curves[name] = [l for l in lines if "step" in l and "loss" in l]
  terms = [t for t in ("loss", "cpsd", "ntxent") if any(t in l for c in curves.values() for l in c)]
  fig, axes = plt.subplots(1, max(len(terms), 1), figsize=(4.5 * max(len(terms), 1), 3.5), squeeze=False)
  for ax, term in zip(axes[0], terms):
    for i, (name, lines) in enumerate(curves.items()):
      pts = [(l["step"], l[term]) for l in lines if term in l]
      if pts:
        ax.plot(*zip(*pts), label=name, color=f"C{i}")
    ax.set_title(term)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run_demo(out="mt2_demo", preset: str = "default", progress: bool = True) -> dict[str, Any]:
  """Runs (or finishes) the demo in `out`; returns {results, findings, paths, timings, workdirs}."""
  from mt2_jax.eval import probe
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
  p = PRESETS[preset]
  out = pathlib.Path(out).absolute()
  out.mkdir(parents=True, exist_ok=True)
  timings = {}
  t0 = t = time.time()

  def lap(stage):
    nonlocal t
    timings[stage] = round(time.time() - t, 1)
    print(f"demo: {stage} done in {timings[stage]:.1f} s", flush=True)
    t = time.time()

  corpus_dir = stage_corpus(out, p, progress)
  lap("corpus")
  data_dir = stage_prepare(out, corpus_dir, p.workers, progress)
  eval_dir = stage_prepare(out, corpus_dir, p.workers, progress, "validation") if p.eval_every else None
  lap("prepare")
  workdirs = stage_train(out, p, data_dir, progress, eval_dir)
  lap("train")
  results = stage_probe(workdirs, corpus_dir, progress)
  lap("probe")
  paths = probe.write_report(results, out, with_findings=True)
  paths["losses"] = os.fspath(out / "losses.png")
  plot_losses(workdirs, paths["losses"])
  timings["total"] = round(time.time() - t0, 1)
  (out / "timings.json").write_text(json.dumps(timings, indent=1))
  paths["timings"] = os.fspath(out / "timings.json")
  return {"results": results, "findings": probe.findings(results), "paths": paths, "timings": timings,
          "workdirs": workdirs}


__all__ = ["PRESETS", "Preset", "RUNS", "TASKS", "run_config", "run_demo", "plot_losses"]
