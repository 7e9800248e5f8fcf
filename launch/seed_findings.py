"""The demo's findings on its test split, checked for several training seeds (docs/experiments.md).

  .venv/bin/python launch/seed_findings.py --demo=mt2_demo --runs=experiments/runs \
      --out=seed_findings [--seeds=0,1,2]

`mt2 demo` trains each model once (seed 0), and most of its findings are
decided by a few test tracks. This reports how they fare over training
seeds. Each seed's runs are `<experiment>_s{seed}` in --runs for the three
experiments of --experiments (MT2, contrastive-only, equivariant-only; by
default the demo's three configs at today's defaults), as
`launch/equivariance_experiments.py
--only=mt2_s21_cpsdlr1,con_s12_conread,eq_s21_cpsdlr1 --seed=S`
trains them (seed 0: the demo's own seed). Each seed's runs are probed
exactly as `mt2 demo` probes its own (demo.stage_probe: the test chorales
and notes, the untrained model, the references) and the findings are
checked (probe.findings, with paired differences over test tracks).

Reporting only: nothing is chosen from these numbers. Writes
OUT/seed{S}/results.{json,md} and probe.png per seed, and OUT/seed_findings.md:
a line per finding with each seed's verdict and difference, and the scores
averaged over the seeds.
"""

import argparse
import json
import os
import pathlib
import sys

import numpy as np

# The demo's runs, in demo.RUNS order, as experiments (tests/test_demo.py checks they
# are); session 8: mt2_cait,con_cait,eq_cait; session 11: mt2_cait_eqlr3x,con_cait,eq_cait_eqlr3x;
# session 12: mt2_cait_eqlr3x_shiftpos,con_cait_shiftpos,eq_cait_eqlr3x; session 19:
# mt2_s12_split,con_s12_split,eq_s12_split; session 20: mt2_s12_conread,con_s12_conread,
# eq_s12_conread.
DEFAULTS = "mt2_s21_cpsdlr1,con_s12_conread,eq_s21_cpsdlr1"
SCORES = ("key", "key_signature", "instrument", "chorale_instrument")


def verdict(f) -> str:
  """One table cell: yes/no, and the paired difference with its interval (bold: outside the noise)."""
  word = "n/a" if f["holds"] is None else "yes" if f["holds"] else "no"
  if f["diff"] is None:
    return word if f["a"] is None or f["b"] is None else f"{word} ({f['a']:.3f} vs {f['b']:.3f})"
  cell = f"{word} {f['diff']:+.3f} [{f['diff_ci'][0]:+.2f}, {f['diff_ci'][1]:+.2f}]"
  return f"**{cell}**" if f["sure"] else cell


def report(per_seed: dict[int, list[dict]]) -> tuple[str, dict[int, list[dict]]]:
  """(Markdown: the findings by seed, then the mean score of every (model, feature)
  over the seeds; {seed: probe.findings})."""
  from mt2_jax.eval import probe
  seeds = sorted(per_seed)
  items = {s: probe.findings(per_seed[s]) for s in seeds}
  lines = ["## Findings by training seed (test split; bold: the paired 95% interval leaves out 0)", "",
           "| finding | " + " | ".join(f"seed {s}" for s in seeds) + " | holds in |",
           "|---|" + "---|" * len(seeds) + "--:|"]
  for i, f in enumerate(items[seeds[0]]):
    row = [items[s][i] for s in seeds]
    held = sum(bool(r["holds"]) for r in row)
    lines.append(f"| {f['claim']} | " + " | ".join(verdict(r) for r in row)
                 + f" | {held}/{len(seeds)} |")
  lines += ["", f"## Scores, mean over seeds {', '.join(map(str, seeds))} (min-max)", "",
            "| model | feature | " + " | ".join(SCORES) + " |", "|---|---|" + "---|" * len(SCORES)]
  cells = {}
  for s in seeds:
    for r in per_seed[s]:
      for m in SCORES:
        if m in r:
          cells.setdefault((r["model"], r["feature"]), {}).setdefault(m, []).append(r[m])
  for (model, feature), by_metric in cells.items():
    fmt = lambda v: (f"{np.mean(v):.3f} ({min(v):.2f}-{max(v):.2f})" if len(v) == len(seeds)
                     else "")
    lines.append(f"| {model} | {feature} | "
                 + " | ".join(fmt(by_metric.get(m, [])) for m in SCORES) + " |")
  return "\n".join(lines) + "\n", items


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--demo", required=True, help="folder where `mt2 demo` rendered corpus/")
  p.add_argument("--runs", required=True, help="folder with the runs (the experiment script's OUT/runs)")
  p.add_argument("--out", required=True)
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--experiments", default=DEFAULTS,
                 help="the MT2, contrastive-only and equivariant-only experiments, in that order")
  a = p.parse_args(argv)
  sys.path.insert(0, os.fspath(pathlib.Path(__file__).resolve().parent.parent))
  from mt2_jax import demo
  from mt2_jax.eval import probe
  seeds = [int(s) for s in a.seeds.split(",")]
  runs = pathlib.Path(a.runs)
  experiments = a.experiments.split(",")
  if len(experiments) != len(demo.RUNS):
    p.error(f"--experiments: one per model of {demo.RUNS}, got {experiments}")
  workdirs = {s: {name: runs / f"{e}_s{s}" for name, e in zip(demo.RUNS, experiments)} for s in seeds}
  missing = [os.fspath(w) for by_name in workdirs.values() for w in by_name.values()
             if not (w / "config.json").exists()]
  if missing:  # Before any compute.
    p.error("runs not found (train them with launch/equivariance_experiments.py "
            f"--only={a.experiments} --seed=S): {missing}")
  out = pathlib.Path(a.out)
  per_seed = {}
  for s in seeds:
    print(f"== seed {s}", flush=True)
    per_seed[s] = demo.stage_probe(workdirs[s], pathlib.Path(a.demo) / "corpus", progress=True)
    probe.write_report(per_seed[s], out / f"seed{s}", with_findings=True)
  text, items = report(per_seed)
  (out / "seed_findings.md").write_text(text)
  (out / "seed_findings.json").write_text(json.dumps(items, indent=1))
  print(text)


if __name__ == "__main__":
  main()
