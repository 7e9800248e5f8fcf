"""The probe report: a table, a bar chart and the paper's findings, from result rows.

A result row is {model, feature, task, <metric>: score, <ci_name(metric)>:
[lo, hi], ...} (mt2_jax/eval/probe.py). The table has one row per (model,
feature) and one column per metric present; a cell reads `0.711 [0.62-0.80]`
(score, 95% bootstrap interval); the chart draws the intervals as error bars.
"""

import io
import json
from typing import Any, Sequence

import numpy as np

from mt2_jax import storage
from mt2_jax.eval.tasks import ci_name

COLUMNS = (("key", "key (MIREX)"), ("key_signature", "key signature (acc)"),
           ("instrument", "instrument (acc)"), ("chorale_instrument", "chorale instrument (acc)"),
           ("pitch", "pitch (acc)"))


def _cells(results: Sequence[dict[str, Any]]):
  """(metrics [(metric, title)] present, row keys [(model, feature)] in order,
  {row key: {metric: (score, [lo, hi] or None)}})."""
  metrics = [(m, title) for m, title in COLUMNS if any(m in r for r in results)]
  order, cells = [], {}
  for r in results:
    k = (r["model"], r["feature"])
    if not any(m in r for m, _ in metrics):
      continue  # Not a table row (e.g. token_similarity's).
    if k not in cells:
      order.append(k)
      cells[k] = {}
    for m, _ in metrics:
      if m in r:
        cells[k][m] = (r[m], r.get(ci_name(m)))
  return metrics, order, cells


def table(results: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
  """(header, rows) with one row per (model, feature), one column per metric
  present; a cell reads `score [lo-hi]`."""
  metrics, order, cells = _cells(results)
  fmt = lambda v, ci: f"{v:.3f}" + (f" [{ci[0]:.2f}-{ci[1]:.2f}]" if ci else "")
  header = ["model", "feature"] + [title for _, title in metrics]
  body = [[model, feat] + [fmt(*cells[(model, feat)][m]) if m in cells[(model, feat)] else ""
                           for m, _ in metrics]
          for model, feat in order]
  return header, body


def markdown(results: Sequence[dict[str, Any]]) -> str:
  """The `table` as a Markdown table."""
  header, body = table(results)
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in body]
  return "\n".join(lines) + "\n"


def plot(results: Sequence[dict[str, Any]], path) -> None:
  """One horizontal bar panel per metric, one bar per (model, feature), 95% intervals as error bars."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  metrics, order, cells = _cells(results)
  labels = [f"{m} / {f}" for m, f in order]
  colors = ["0.6" if any(s in l for s in ("untrained", "KK", "MFCC")) else f"C{i % 10}"
            for i, l in enumerate(labels)]
  fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics) + 3, 0.3 * len(order) + 1.5),
                           sharey=True, squeeze=False)
  for ax, (m, title) in zip(axes[0], metrics):
    got = [cells[k].get(m, (np.nan, None)) for k in order]
    values = np.array([v for v, _ in got])
    err = np.array([[v - ci[0], ci[1] - v] if ci else [0.0, 0.0] for v, ci in got]).T  # [2, rows]
    ax.barh(np.arange(len(order)), np.nan_to_num(values), xerr=err, color=colors,
            error_kw=dict(ecolor="0.2", elinewidth=1, capsize=2))
    ax.set_xlim(0, 1)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
  axes[0][0].set_yticks(np.arange(len(order)), labels, fontsize=8)
  axes[0][0].invert_yaxis()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def findings(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """The paper's findings, checked in kind on `mt2 demo`'s results (its model names).

  Each: {claim, a, a_label, b, b_label, holds}: the claim is a > b (a >= b
  where it says "at least as good"); holds is None where a score is missing
  (a task or model not probed). Scores are the headline metric of each task
  (MIREX for key, accuracy otherwise), point estimates.
  """
  def get(model, feature, task):
    return next((r[task] for r in results
                 if (r["model"], r["feature"], r["task"]) == (model, feature, task) and task in r), None)

  def best(models, task, exclude=()):
    """(score, 'model feature') of the best probed feature of any of models."""
    scored = [(r[task], f"{r['model']} {r['feature']}") for r in results
              if r["model"] in models and r["task"] == task and task in r and r["feature"] not in exclude]
    return max(scored, key=lambda s: s[0]) if scored else (None, " / ".join(models))  # Ties: first.

  out = []

  def check(claim, a, b, at_least=False):
    (a, a_label), (b, b_label) = a, b
    holds = None if a is None or b is None else bool(a >= b if at_least else a > b)
    out.append(dict(claim=claim, a=a, a_label=a_label, b=b, b_label=b_label, holds=holds))

  token = lambda feature, task: (get("mt2", feature, task), f"mt2 {feature}")
  eq, con = "cls_equivariant", "cls_contrastive"
  check("key: the equivariant token beats the contrastive token", token(eq, "key"), token(con, "key"))
  check("key: the equivariant token beats the untrained model's best feature", token(eq, "key"),
        best(["mt2 (untrained)"], "key"))
  check("chorale instrument: the contrastive token beats the equivariant token",
        token(con, "chorale_instrument"), token(eq, "chorale_instrument"))
  check("note instrument: the contrastive token beats the equivariant token",
        token(con, "instrument"), token(eq, "instrument"))
  tasks = ("key", "chorale_instrument", "instrument")
  for task in tasks:
    check(f"{task.replace('_', ' ')}: MT2's best feature is at least as good as both "
          "single-token models'",
          best(["mt2"], task), best(["contrastive_only", "equivariant_only"], task), at_least=True)
  # cls_mean against MT2's best other feature, on the task where it comes closest.
  pairs = {t: (token("cls_mean", t), best(["mt2"], t, exclude=("cls_mean",))) for t in tasks}
  margin = lambda t: (-np.inf if None in (pairs[t][0][0], pairs[t][1][0])
                      else pairs[t][0][0] - pairs[t][1][0])
  task = max(tasks, key=margin)
  check(f"the token average is MT2's best feature on at least one task (closest: {task})",
        *pairs[task], at_least=True)
  r2 = next((r["token_r2"] for r in results if r["model"] == "mt2" and r["task"] == "tokens"
             and r["feature"] == f"{eq} -> {con}"), None)
  check("the two class tokens are two features (R^2 of the contrastive token from a linear map of "
        "the equivariant one, on test tracks, below 0.9)", (0.9, "bound"), (r2, "token R^2"))
  check("key: the equivariant token beats the KK chroma template", token(eq, "key"),
        (get("KK chroma template", "chroma", "key"), "KK chroma template"))
  check("chorale instrument: the contrastive token beats MFCC stats", token(con, "chorale_instrument"),
        (get("MFCC stats", "mfcc", "chorale_instrument"), "MFCC stats"))
  return out


def findings_markdown(items: Sequence[dict[str, Any]]) -> str:
  """A Markdown list, a line per finding: yes / no / n/a, claim, the two scores."""
  num = lambda v: "n/a" if v is None else f"{v:.3f}"
  lines = ["## Findings (the paper's, in kind, on point scores)", ""]
  lines += [f"- **{'n/a' if f['holds'] is None else 'yes' if f['holds'] else 'no'}** {f['claim']}: "
            f"{num(f['a'])} ({f['a_label']}) vs {num(f['b'])} ({f['b_label']})" for f in items]
  return "\n".join(lines) + "\n"


def write_report(results: Sequence[dict[str, Any]], out_dir, with_findings: bool = False) -> dict[str, str]:
  """results.json, results.md (findings below the table if asked) and probe.png
  in out_dir; returns their paths."""
  out_dir = storage.output_dir(out_dir, "--out")  # A local folder or a bucket URL.
  paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md",
           "chart": out_dir / "probe.png"}
  storage.write_text(paths["json"], json.dumps(list(results), indent=1))
  notes = "\n" + findings_markdown(findings(results)) if with_findings else ""
  storage.write_text(paths["markdown"], markdown(results) + notes)
  chart = io.BytesIO()
  plot(results, chart)
  storage.write_bytes(paths["chart"], chart.getvalue())
  return {k: str(v) for k, v in paths.items()}


__all__ = ["COLUMNS", "findings", "findings_markdown", "markdown", "plot", "table", "write_report"]
