"""Linear probes on frozen features of trained runs (docs/design.md §1.6).

`mt2 probe` (mt2_jax/cli/probe.py) and `mt2 demo` call `probe_runs`; the parts
live beside this module and every public name is re-exported here:

  tasks.py       labelled rows, each task's examples and splits, per-track
                 scores and bootstrap intervals
  linear.py      the linear probe (softmax regression, Adam, early stopping)
  references.py  zero-shot head readout, Krumhansl-Kessler chroma template,
                 chroma and MFCC stats of a track
  features.py    track-level features of a folder (a run's embeddings,
                 chroma, MFCC stats), cached
  report.py      table, Markdown, chart and the paper's findings
  mt2_jax/keys.py  pitch names, keys, key signatures, circle-of-fifths readouts

The data is a labelled audio folder with labels.csv beside the audio, as `mt2
corpus` writes it (columns `file`, `split`, `key`, `instrument`, `pitch`,
`set`). Its `split` column decides: train fits the probe, validation stops it
early, test alone is scored.

Protocol, the same for every feature (each `cls_<token>`, `cls_mean`,
`tokens_mean`, averaged over a track's windows): features standardised with
the training split's mean and deviation, one linear layer (softmax regression)
trained full-batch with Adam (lr 1e-3) on cross-entropy, validation loss
checked every `eval_every` steps, the parameters of the best check kept,
stopped after `patience` checks without improvement.

Tasks:
  key         chorales (rows with a `key`): 24 classes, scored by the MIREX
              weighted score (mir_eval.key.weighted_score, mean over test
              tracks); also key-signature accuracy (12 classes: a key and its
              relative major/minor share one).
  instrument  the note set (rows with set == note): accuracy.
  chorale_instrument
              the instrument of whole chorale renditions (rows with set ==
              chorale): accuracy. The split column as is: by piece, so no
              rendition of a test piece is heard in training.
  pitch       the note set, MIDI pitch: accuracy. The corpus splits notes by
              pitch, so a test pitch never occurs in training; this task
              re-splits the notes by instrument instead (sorted instrument
              names: the last is test, the one before validation).

Reference rows:
  zero-shot   the equivariant head (STONE): its 12-dim profile averaged over
              windows, argmax, plus one rotation (0..11) chosen on the
              training split; this gives a key signature only, so it is scored
              as key-signature accuracy (the MIREX column stays empty). Heads
              whose omega allows it also get the phase readout.
  untrained   the same probes on a randomly initialised model of the same
              config (what the architecture gives before any training).
  kk_chroma   the classic template estimator, no training: chroma (librosa
              `chroma_cqt` of the CQT of the model's front-end, A0 upwards)
              averaged over the track, correlated with the 24 rotations of
              the Krumhansl-Kessler profiles; scored like the key probes.
  MFCC stats  20 MFCCs (librosa.feature.mfcc of the audio at the model's
              sample rate), mean and deviation over the track (40 dims),
              probed like the features on every task: what plain timbre
              statistics give.

Scores are means over test tracks of a per-track score (MIREX weighted
score, key-signature hit, hit), each with a 95% confidence interval from
1000 bootstrap resamples of the test tracks (seeded, so reruns agree): in
results.json `mirex_ci`, `key_signature_ci`, `accuracy_ci` = [lo, hi] beside
the score, and `n_test`; in the table `0.711 [0.62-0.80]`; error bars in
the chart. A task without train or test examples is skipped.

Features are cached per run in `RUN/probe_cache/` (keyed by checkpoint step
and the data's file list; chroma and MFCCs likewise), so probing again, or on
another task, does not embed again. `write_report` writes results.json,
results.md (a Markdown table: rows model x feature, columns tasks) and
probe.png (a bar chart).
"""

from typing import Any, Mapping, Sequence

import numpy as np

from mt2_jax import storage
from mt2_jax.eval import embed as embed_lib
from mt2_jax.eval.features import (data_fingerprint, extract_chroma, extract_cqt_stats,
                                   extract_features, extract_features_many, extract_mfcc)
from mt2_jax.eval.linear import fit_linear_probe, linear_r2, probe_feature
from mt2_jax.eval.references import (KK_MAJOR, KK_MINOR, kk_key, kk_key_scores, track_chroma,
                                     track_cqt_stats, track_mfcc, zero_shot_key)
from mt2_jax.eval.report import (COLUMNS, findings, findings_markdown, markdown, paired_difference,
                                 plot, table, write_report)
from mt2_jax.eval.tasks import (KEY_ERRORS, SPLITS, TASKS, TaskData, bootstrap_ci, ci_name,
                                read_examples, score, summarize, task_data, track_scores, usable, valid_rows)
from mt2_jax.keys import (PITCH_NAMES, ZERO_SHOT_READOUTS, best_rotation, fit_rotation,
                          has_phase_readout, key_class, key_name, key_signature, phase_class,
                          read_signatures)


def head_omegas(config) -> dict[str, float]:
  """{'head_<loss>': omega} of a run's CPSD losses (for the phase readout)."""
  return {f"head_{n}": l.get("omega", 7 / 12) for n, l in config.losses.items() if l.kind == "cpsd"}


def probe_features(model_name: str, features: dict[str, np.ndarray], rows, tasks: Sequence[str],
                   feature_names: Sequence[str] | None = None,
                   omegas: dict[str, float] | None = None) -> list[dict[str, Any]]:
  """Probes every feature on every task; plus the zero-shot readouts for key.

  features: {name: [n_rows, dim]} (extract_features); head_<loss> entries are
  read zero-shot, never probed. omegas: {'head_<loss>': omega} (`head_omegas`);
  a head not in it: 7/12.
  Returns result rows {model, feature, task, <metric>: value, ...}.
  """
  feature_names = [n for n in (feature_names or features) if not n.startswith("head_")]
  results = token_similarity(model_name, features, rows, feature_names)
  for task_name in tasks:
    base = task_data(task_name, rows)
    for name in feature_names:
      t = valid_rows(base, [features[name]])
      if not usable(t):
        continue
      results.append({"model": model_name, "feature": name, "task": task_name,
                      **probe_feature(t, features[name])})
    if task_name == "key":
      for head in sorted(n for n in features if n.startswith("head_")):
        t = valid_rows(base, [features[head]])
        if not usable(t):
          continue
        omega = (omegas or {}).get(head, 7 / 12)
        results.append({"model": model_name, "feature": f"zero-shot ({head})", "task": "key",
                        **zero_shot_key(t, features[head])})
        if has_phase_readout(omega):
          results.append({"model": model_name, "feature": f"zero-shot phase ({head})",
                          "task": "key", **zero_shot_key(t, features[head], "phase", omega)})
  return results


def token_similarity(model_name: str, features: dict[str, np.ndarray], rows,
                     feature_names: Sequence[str]) -> list[dict[str, Any]]:
  """For each pair of class tokens a -> b: {model, feature 'a -> b', task 'tokens',
  token_r2}, the R^2 of b from a linear map of a, fitted on the train rows and
  scored on the test rows (eval/linear.py, linear_r2)."""
  tokens = [n for n in feature_names if n.startswith("cls_") and n != "cls_mean"]
  split = np.array([r["split"] for r in rows])
  out = []
  for i, a in enumerate(tokens):
    for b in tokens[i + 1:]:
      ok = np.isfinite(features[a]).all(1) & np.isfinite(features[b]).all(1)
      fit, held = ok & (split == "train"), ok & (split == "test")
      if fit.sum() > features[a].shape[1] and held.sum() > 1:
        out.append({"model": model_name, "feature": f"{a} -> {b}", "task": "tokens",
                    "token_r2": linear_r2(features[a][fit], features[b][fit],
                                          features[a][held], features[b][held])})
  return out


def reference_rows(data_dir, rows, cqt, cache_dir, tasks: Sequence[str],
                   progress: bool = True) -> list[dict[str, Any]]:
  """The rows without a model: 'KK chroma template' on key, 'MFCC stats' on every task.

  Audio is read at cqt.sample_rate (the model's); chroma and MFCCs are cached
  in cache_dir, keyed by the data's fingerprint.
  """
  cache_dir = storage.path(cache_dir)
  fp = data_fingerprint(data_dir, rows)
  results = []
  if "key" in tasks:
    chroma = extract_chroma(data_dir, rows, cqt, cache_dir / f"chroma_{fp}.npz", progress)
    task = valid_rows(task_data("key", rows), [chroma])
    results.append({"model": "KK chroma template", "feature": "chroma", "task": "key",
                    **kk_key(task, chroma)})
  mfcc = extract_mfcc(data_dir, rows, cqt.sample_rate, cache_dir / f"mfcc_{fp}.npz", progress)
  return results + probe_features("MFCC stats", {"mfcc": mfcc}, rows, tasks)


def probe_runs(workdirs: Mapping[str, Any], data_dir, tasks: Sequence[str] = ("key",),
               step: int | None = None, untrained: bool = True, references: bool = True,
               embedders: Mapping[str, embed_lib.Embedder] | None = None,
               progress: bool = True) -> list[dict[str, Any]]:
  """All probes of several runs on one labelled folder, features cached in each run.

  workdirs: {name: run folder}; a run's rows are labelled by its name. The
  references come from the first run: untrained adds '<name> (untrained)' rows
  (a randomly initialised model of its config), references adds
  reference_rows (audio at its CQT's rate, cached in its probe_cache/). Rows
  come in that order: every run's, then the untrained model's, then the
  references'.
  step: the checkpoint of every run (default: each one's latest).
  embedders: {name: Embedder} used instead of loading those runs.
  """
  if not workdirs:
    raise ValueError("probe_runs: no runs")
  rows = read_examples(data_dir)
  fp = data_fingerprint(data_dir, rows)
  # Every model's features in one pass over the audio (one CQT per file).
  jobs = []
  for name, workdir in workdirs.items():
    embedder = (embedders or {}).get(name) or embed_lib.Embedder.from_run(workdir, step)
    cache = storage.path(workdir) / "probe_cache"
    jobs.append((name, embedder, cache / f"features_step{embedder.step}_{fp}.npz"))
  # The first run's config and CQT make the references, reported after every run's rows.
  first_name, first, first_features = jobs[0]
  first_cache = first_features.parent
  if untrained:
    jobs.append((f"{first_name} (untrained)", embed_lib.Embedder.untrained(first.config),
                 first_cache / f"features_untrained_{fp}.npz"))
  feats = extract_features_many([(e, c) for _, e, c in jobs], data_dir, rows, progress)
  results = []
  for (name, embedder, _), f in zip(jobs, feats):
    results += probe_features(name, f, rows, tasks, embedder.feature_names,
                              head_omegas(embedder.config))
  if references:
    results += reference_rows(data_dir, rows, first.cqt, first_cache, tasks, progress)
  return results


def probe_run(workdir, data_dir, tasks: Sequence[str] = ("key",), step: int | None = None,
              untrained: bool = True, references: bool = True, name: str | None = None,
              embedder: embed_lib.Embedder | None = None, progress: bool = True) -> list[dict[str, Any]]:
  """All probes of one run (its latest checkpoint, or `step`): `probe_runs` of {name: workdir}.

  name labels the run's rows (default: the workdir's name); untrained adds
  rows for '<name> (untrained)'; references adds reference_rows.
  """
  name = name or storage.path(workdir).name
  return probe_runs({name: workdir}, data_dir, tasks, step, untrained, references,
                    {name: embedder} if embedder is not None else None, progress)


__all__ = [
    "COLUMNS", "KEY_ERRORS", "KK_MAJOR", "KK_MINOR", "PITCH_NAMES", "SPLITS", "TASKS",
    "ZERO_SHOT_READOUTS", "TaskData", "best_rotation", "bootstrap_ci", "ci_name",
    "data_fingerprint", "extract_chroma", "extract_cqt_stats", "extract_features", "extract_mfcc",
    "findings", "findings_markdown", "fit_linear_probe", "fit_rotation", "has_phase_readout",
    "head_omegas", "key_class", "key_name", "key_signature", "kk_key", "kk_key_scores", "linear_r2",
    "markdown", "paired_difference", "phase_class", "plot", "probe_feature", "probe_features",
    "probe_run", "probe_runs", "read_examples", "read_signatures", "reference_rows", "score",
    "summarize", "table", "task_data", "token_similarity", "track_chroma", "track_cqt_stats",
    "track_mfcc", "track_scores", "usable", "valid_rows", "write_report", "zero_shot_key",
]
