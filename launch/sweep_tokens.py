"""Ablation on the number of class tokens: K=1 (each loss), K=2 (MT2), K=3, one table.

  .venv/bin/python launch/sweep_tokens.py --data DATA --out SWEEP_DIR [--arg runlocal] [--steps N]

Runs `mt2 train` for configs/equivariant_only.py, contrastive_only.py, mt2.py
and mt2_k3.py one after another in SWEEP_DIR/<name> (each resumes if it was
interrupted), then collects each run's last metrics.jsonl line into
SWEEP_DIR/sweep.md and sweep.json. On a cluster, submit the same four
commands as separate jobs (see launch/slurm.sbatch) and run this with
--collect_only once they are done.

At the demo's size, with probes (key, key signature, instrument per token
and for their average, scored on the test chorales):

  .venv/bin/python launch/sweep_tokens.py --demo mt2_demo --out sweep

trains the four configs with `mt2 demo`'s settings on the data a finished
`mt2 demo` left in mt2_demo/ (launch/equivariance_experiments.py, SWEEP).
K=1 and K=2 are the demo's own three runs (same config, seed and data):
they are linked in from mt2_demo/runs rather than trained again.
"""

import argparse
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
RUNS = {"equivariant_only": 1, "contrastive_only": 1, "mt2": 2, "mt2_k3": 3}
COLUMNS = ("step", "loss", "cpsd", "ntxent", "ntxent_acc", "cpsd_semitone", "views_per_sec")


def last_metrics(workdir: pathlib.Path) -> dict:
  path = workdir / "metrics.jsonl"
  lines = path.read_text().splitlines() if path.exists() else []
  return json.loads(lines[-1]) if lines else {}


def table(results: dict) -> str:
  rows = ["| config | K | " + " | ".join(COLUMNS) + " |", "|---|--:|" + "--:|" * len(COLUMNS)]
  for name, m in results.items():
    cells = [f"{m[c]:.4g}" if isinstance(m.get(c), float) else str(m.get(c, "")) for c in COLUMNS]
    rows.append(f"| {name} | {RUNS[name]} | " + " | ".join(cells) + " |")
  return "\n".join(rows)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", help="prepared dataset (required unless --demo)")
  p.add_argument("--demo", help="a finished `mt2 demo` folder: train at its size and probe")
  p.add_argument("--out", required=True)
  p.add_argument("--arg", default="", help="config arg for every run, e.g. runlocal")
  p.add_argument("--steps", type=int, default=None, help="override total_steps")
  p.add_argument("--collect_only", action="store_true")
  a = p.parse_args()
  out = pathlib.Path(a.out).absolute()
  if a.demo:
    sys.path.insert(0, str(ROOT / "launch"))
    import equivariance_experiments  # pylint: disable=g-import-not-at-top
    demo_runs = {"k1_equivariant": "equivariant_only", "k1_contrastive": "contrastive_only",
                 "k2_mt2": "mt2"}
    for name, run in demo_runs.items():
      source, link = pathlib.Path(a.demo).absolute() / "runs" / run, out / "runs" / f"{name}_s0"
      if source.exists() and not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source, target_is_directory=True)
    equivariance_experiments.main(["--demo", a.demo, "--out", str(out), "--split", "test",
                                   "--only", ",".join(equivariance_experiments.SWEEP)])
    return
  if not a.data:
    p.error("--data is required (or --demo)")
  mt2 = pathlib.Path(sys.executable).parent / "mt2"
  for name in RUNS:
    if a.collect_only:
      break
    cmd = [str(mt2), "train", f"--config={ROOT / 'configs' / name}.py{':' + a.arg if a.arg else ''}",
           f"--workdir={out / name}", f"--config.data_dir={a.data}"]
    if a.steps:
      cmd.append(f"--config.total_steps={a.steps}")
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
  results = {name: last_metrics(out / name) for name in RUNS}
  md = table(results)
  (out / "sweep.md").write_text(md + "\n")
  (out / "sweep.json").write_text(json.dumps(results, indent=2))
  print(md)


if __name__ == "__main__":
  main()
