"""`mt2 demo --preset smoke`: the whole pipeline end to end, then again from its caches."""

import inspect
import json

from absl import flags
import numpy as np
import pytest

from mt2_jax import config_validation
from mt2_jax import demo
from mt2_jax.cli import demo as demo_cli
from mt2_jax.data import corpus
from mt2_jax.train import checkpoint

from conftest import load_repo_file


@pytest.mark.parametrize("name", sorted(demo.PRESETS))
def test_every_preset_asks_for_a_corpus_and_runs_that_exist(name):
  # Presets other than smoke run only by hand (20+ minutes): a misspelt corpus
  # setting or config key would otherwise first show after minutes of work.
  preset = demo.PRESETS[name]
  inspect.signature(corpus.make_corpus).bind("out", **preset.corpus)
  for run in demo.RUNS:
    config_validation.validate(demo.run_config(run, preset, "data"))


def test_demo_smoke_end_to_end_and_resumes(tmp_path, capsys):
  out = tmp_path / "demo"
  first = demo.run_demo(out, "smoke", progress=False)
  results = first["results"]

  models = {r["model"] for r in results}
  assert models == {"mt2", "contrastive_only", "equivariant_only", "mt2 (untrained)", "KK chroma template",
                    "MFCC stats"}
  features = {(r["model"], r["feature"]) for r in results}
  assert ("mt2", "cls_equivariant") in features and ("mt2", "cls_contrastive") in features
  assert ("contrastive_only", "cls_contrastive") in features
  assert ("equivariant_only", "zero-shot (head_cpsd)") in features
  for r in results:
    for metric in ("key", "key_signature", "instrument"):
      if metric in r:
        assert 0.0 <= r[metric] <= 1.0, r
  assert all("instrument" in r for r in results if r["task"] == "instrument")
  for name in demo.RUNS:
    lines = (out / "runs" / name / "metrics.jsonl").read_text().splitlines()
    assert lines and "loss" in json.loads(lines[-1])
  for key in ("markdown", "json", "chart", "losses"):
    assert (out / first["paths"][key].split("/")[-1]).exists()
  assert (out / "losses.png").read_bytes()[:4] == b"\x89PNG"

  # Second run: nothing is rendered, prepared, trained or embedded again.
  # What the first run wrote and a second one must not write again: the audio,
  # the dataset, each run's metrics and every cached feature file.
  written = [p for p in out.rglob("*") if p.is_file() and (
      p.suffix in (".flac", ".array_record") or p.name == "metrics.jsonl" or "probe_cache" in p.parts
      or ".array_record-" in p.name)]
  assert any("probe_cache" in p.parts for p in written) and any(p.suffix == ".flac" for p in written)
  mtimes = {p: p.stat().st_mtime_ns for p in written}
  flags.FLAGS.out = str(out)
  flags.FLAGS.smallest = True
  try:
    demo_cli.main(["mt2 demo"])
  finally:
    flags.FLAGS.smallest = False
    flags.FLAGS.out = None
  assert {p: p.stat().st_mtime_ns for p in written} == mtimes
  printed = capsys.readouterr().out
  assert "| mt2 | cls_mean |" in printed and "KK chroma template" in printed
  assert str(out) in printed
  second = json.loads((out / "results.json").read_text())
  assert len(second) == len(results)
  for a, b in zip(results, second):
    for metric in ("key", "key_signature", "instrument"):
      if metric in a:
        np.testing.assert_allclose(a[metric], b[metric])

  # A folder whose labels an older version wrote (its marker has no
  # labels_version): the corpus stage runs again, rewrites labels.csv and
  # keeps every audio file.
  corpus_dir = out / "corpus"
  marker = corpus_dir / ".demo_done.json"
  settings = json.loads(marker.read_text())
  labels = (corpus_dir / "labels.csv").read_text()
  marker.write_text(json.dumps({k: v for k, v in settings.items() if k != "labels_version"}))
  (corpus_dir / "labels.csv").write_text(labels.replace(",test,", ",train,"))
  demo.stage_corpus(out, demo.PRESETS["smoke"], progress=False)
  assert (corpus_dir / "labels.csv").read_text() == labels
  assert json.loads(marker.read_text()) == settings
  assert {p: p.stat().st_mtime_ns for p in written if p.suffix == ".flac"} == {
      p: t for p, t in mtimes.items() if p.suffix == ".flac"}

  # A run an older version trained with other defaults (here: before
  # losses.cpsd.lr_scale) is moved aside, not reused and not deleted.
  config_path = out / "runs" / "mt2" / "config.json"
  old = json.loads(config_path.read_text())
  del old["losses"]["cpsd"]["lr_scale"]
  config_path.write_text(json.dumps(old))
  others = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*_only/metrics.jsonl")}
  demo.stage_train(out, demo.PRESETS["smoke"], out / "data", False, out / "data_val")
  printed = capsys.readouterr().out
  assert "mt2's settings changed (losses.cpsd.lr_scale: '(unset)' -> 1.0)" in printed
  assert json.loads((out / "runs" / "mt2.old1" / "config.json").read_text()) == old
  assert json.loads(config_path.read_text())["losses"]["cpsd"]["lr_scale"] == 1.0
  assert (out / "runs" / "mt2" / "metrics.jsonl").exists()
  assert {p: p.stat().st_mtime_ns for p in others} == others and len(others) == 2


def test_every_experiment_of_the_record_builds_a_valid_config():
  # launch/equivariance_experiments.py: the runs behind docs/experiments.md, rerun by hand.
  experiments = load_repo_file("launch/equivariance_experiments.py")
  for name in experiments.EXPERIMENTS:
    config_validation.validate(experiments.experiment_config(name, "data"))
  # A row means the same whatever the defaults: the paper's reading sets one rate.
  config = experiments.experiment_config("mt2_cait", "data")
  assert config.losses.cpsd.lr_scale == 1.0 and config.model.class_blocks == 1
  assert not config.losses.ntxent.include_shift_view


def test_experiment_scoring_never_sees_the_test_split():
  """The record's rows are scored on validation chorales and notes; the probe
  stops on training pieces (chorales) or pitches (notes) held out whole."""
  experiments = load_repo_file("launch/equivariance_experiments.py")
  splits = ("train", "validation", "test")
  rows = [{"set": "chorale", "piece": f"bwv{i % 40}", "split": splits[i % 40 % 3], "pitch": ""}
          for i in range(120)]
  rows += [{"set": "note", "piece": f"{inst}_{p}", "split": splits[p % 3],
            "pitch": str(p)} for inst in ("organ", "flute") for p in range(36, 84)]
  out = experiments.tuning_rows(rows)
  kept = [r for r in rows if r["split"] != "test"]
  assert len(out) == len(kept) and {r["set"] for r in out} == {"chorale", "note"}
  for r, o in zip(kept, out, strict=True):
    assert (o["split"] == "test") == (r["split"] == "validation")
  for column in ("piece", "pitch"):
    groups = {}
    for o in out:
      if o["split"] != "test" and o[column] and (o["set"] == "chorale") == (column == "piece"):
        groups.setdefault(o[column], set()).add(o["split"])
    assert all(len(s) == 1 for s in groups.values())  # A group is one split, never both.
    assert {s for v in groups.values() for s in v} == {"train", "validation"}


def test_experiments_refuse_a_run_trained_with_other_settings(tmp_path):
  """A finished run whose settings have moved since (a new default) is named,
  not silently reused; a linked demo run, whose periodic evaluation differs, is fine."""
  experiments = load_repo_file("launch/equivariance_experiments.py")
  configs = {n: experiments.experiment_config(n, "data") for n in ("mt2_cait", "k2_mt2")}
  demo_run = demo.run_config("mt2", demo.PRESETS["default"], "data", eval_dir="data_val")
  assert demo_run.eval.every > 0
  checkpoint.save_config(tmp_path / "k2_mt2_s0", demo_run)
  old = experiments.experiment_config("mt2_cait", "data")
  old.optim.lr = 2e-3
  checkpoint.save_config(tmp_path / "mt2_cait_s0", old)
  assert experiments.stale_runs(tmp_path, configs, 0) == ["mt2_cait: optim.lr: 0.002 -> 0.001"]


def test_seed_findings_checks_the_demos_own_configs():
  """launch/seed_findings.py's default experiments are the demo's runs at
  today's defaults, key for key: a default that moves without them fails here."""
  experiments = load_repo_file("launch/equivariance_experiments.py")
  seeds = load_repo_file("launch/seed_findings.py")
  for run, name in zip(demo.RUNS, seeds.DEFAULTS.split(","), strict=True):
    assert experiments.EXPERIMENTS[name][0] == run
    config = experiments.experiment_config(name, "data")
    assert checkpoint.config_changes(demo.run_config(run, demo.PRESETS["default"], "data"),
                                     config) == [], name
