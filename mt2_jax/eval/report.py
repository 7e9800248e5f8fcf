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
from mt2_jax.eval.tasks import bootstrap_ci, ci_name

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


def paired_difference(a: dict[str, Any], b: dict[str, Any], metric: str):
  """(mean of a - b, its 95% bootstrap interval [lo, hi]) over the test tracks
  both rows scored, or None.

  a, b: result rows carrying 'tracks' and 'per_track' (tasks.summarize). The
  two scores are compared track by track and the tracks resampled together,
  so the interval is that of the difference: much narrower than the two
  scores' own intervals when both features get the same tracks right.
  """
  if not all(metric in r.get("per_track", {}) for r in (a, b)):
    return None
  va, vb = (dict(zip(r["tracks"], r["per_track"][metric])) for r in (a, b))
  d = np.array([va[t] - vb[t] for t in sorted(set(va) & set(vb))])
  return (float(d.mean()), bootstrap_ci(d)) if d.size else None


def findings(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """The paper's findings, checked in kind on `mt2 demo`'s results (its model names).

  Each: {claim, a, a_label, b, b_label, holds, diff, diff_ci, sure}: the claim
  is a > b (a >= b where it says "at least as good"); holds is None where a
  score is missing (a task or model not probed). Scores are the headline
  metric of each task (MIREX for key, accuracy otherwise), point estimates.
  diff, diff_ci: a - b with its paired 95% interval over the test tracks
  (paired_difference; None where a side has no per-track scores); sure:
  whether that interval leaves out 0, i.e. the verdict is outside the noise
  of the test set (None without an interval).
  """
  def get(model, feature, task):
    return next((r for r in results
                 if (r["model"], r["feature"], r["task"]) == (model, feature, task) and task in r), None)

  def best(models, task, exclude=()):
    """The row of the best probed feature of any of models (ties: the first), or None."""
    scored = [r for r in results
              if r["model"] in models and r["task"] == task and task in r and r["feature"] not in exclude]
    return max(scored, key=lambda r: r[task]) if scored else None

  out = []

  def check(claim, task, a, b, at_least=False, labels=(None, None)):
    """a, b: result rows (or None) scored on task; labels name fixed sides."""
    label = lambda r, default: f"{r['model']} {r['feature']}" if r else default
    va, vb = (r[task] if r else None for r in (a, b))
    holds = None if va is None or vb is None else bool(va >= vb if at_least else va > vb)
    paired = paired_difference(a, b, task) if a and b else None
    diff, ci = paired if paired else (None, None)
    sure = None if ci is None else bool(ci[0] > 0 or ci[1] < 0)
    out.append(dict(claim=claim, a=va, a_label=labels[0] or label(a, "?"), b=vb,
                    b_label=labels[1] or label(b, "?"), holds=holds, diff=diff, diff_ci=ci, sure=sure))

  eq, con = "cls_equivariant", "cls_contrastive"
  token = lambda feature, task: get("mt2", feature, task)
  check("key: the equivariant token beats the contrastive token", "key", token(eq, "key"),
        token(con, "key"))
  check("key: the equivariant token beats the untrained model's best feature", "key",
        token(eq, "key"), best(["mt2 (untrained)"], "key"))
  check("chorale instrument: the contrastive token beats the equivariant token", "chorale_instrument",
        token(con, "chorale_instrument"), token(eq, "chorale_instrument"))
  check("note instrument: the contrastive token beats the equivariant token", "instrument",
        token(con, "instrument"), token(eq, "instrument"))
  tasks = ("key", "chorale_instrument", "instrument")
  for task in tasks:
    check(f"{task.replace('_', ' ')}: MT2's best feature is at least as good as both "
          "single-token models'", task,
          best(["mt2"], task), best(["contrastive_only", "equivariant_only"], task), at_least=True)
  # cls_mean against MT2's best other feature, on the task where it comes closest.
  pairs = {t: (token("cls_mean", t), best(["mt2"], t, exclude=("cls_mean",))) for t in tasks}
  margin = lambda t: (-np.inf if None in pairs[t] else pairs[t][0][t] - pairs[t][1][t])
  task = max(tasks, key=margin)
  check(f"the token average is MT2's best feature on at least one task (closest: {task})", task,
        *pairs[task], at_least=True)
  r2 = next((r for r in results if r["model"] == "mt2" and r["task"] == "tokens"
             and r["feature"] == f"{eq} -> {con}"), None)
  check("the two class tokens are two features (R^2 of the contrastive token from a linear map of "
        "the equivariant one, on test tracks, below 0.9)", "token_r2", {"token_r2": 0.9}, r2,
        labels=("bound", "token R^2"))
  check("key: the equivariant token beats the KK chroma template", "key", token(eq, "key"),
        get("KK chroma template", "chroma", "key"), labels=(None, "KK chroma template"))
  check("chorale instrument: the contrastive token beats MFCC stats", "chorale_instrument",
        token(con, "chorale_instrument"), get("MFCC stats", "mfcc", "chorale_instrument"),
        labels=(None, "MFCC stats"))
  return out


def findings_markdown(items: Sequence[dict[str, Any]]) -> str:
  """A Markdown list, a line per finding: yes / no / n/a, claim, the two scores,
  and the paired difference with its interval, marked within or outside the noise."""
  num = lambda v: "n/a" if v is None else f"{v:.3f}"

  def paired(f):
    if f["diff"] is None:
      return ""
    lo, hi = f["diff_ci"]
    where = "outside" if f["sure"] else "within"
    return f"; difference {f['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}], {where} the noise"

  lines = ["## Findings (the paper's, in kind, on point scores; each difference with its paired "
           "95% interval over the test tracks)", ""]
  lines += [f"- **{'n/a' if f['holds'] is None else 'yes' if f['holds'] else 'no'}** {f['claim']}: "
            f"{num(f['a'])} ({f['a_label']}) vs {num(f['b'])} ({f['b_label']}){paired(f)}"
            for f in items]
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


__all__ = ["COLUMNS", "findings", "findings_markdown", "markdown", "paired_difference", "plot", "table",
           "write_report"]
