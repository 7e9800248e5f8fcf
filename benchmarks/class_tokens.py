r"""The cost of more class tokens: step time for K = 1, 2, 3, 4, 8.

  python benchmarks/class_tokens.py                 # tiny at 173 frames
  python benchmarks/class_tokens.py --quick         # test model, K = 2, 3 (tests)

K tokens carry alternating CPSD / NT-Xent losses (`train_step.bench_config`:
K=1 equivariant-only, K=2 the paper's MT2, K=3 adds a second equivariant
token, ...). Each token adds one sequence position (K + T tokens per view)
and one head and loss, so the step should grow by about K/T of the
backbone's cost plus the heads; this measures whether it does.
"""

import argparse
import sys

import jax

from mt2_jax import host

import results  # benchmarks/: a script's folder is on sys.path.
import train_step as bench_lib

SECTION = "bench_class_tokens"
TOKENS = (1, 2, 3, 4, 8)
# K = 2 is the base of the ratios; K = 3 is the smallest that adds a token
# and a loss to the paper's (what every K > 2 does), so quick needs no more.
QUICK = dict(variant="test", frames=32, tracks=2, steps=2, warmup=0, tokens=(2, 3))


def run(quick: bool = False, variant=None, frames=None, tracks=None, tokens=None, steps=None,
        command: str = "") -> dict:
  """One row per K: step time, throughput, FLOPs, memory, and each relative to K=2."""
  device = jax.devices()[0]
  variant = variant or (QUICK["variant"] if quick else "tiny")
  frames = frames or (QUICK["frames"] if quick else 173)
  tracks = tracks or (QUICK["tracks"] if quick else bench_lib.default_tracks(device, variant, frames))
  steps = steps or (QUICK["steps"] if quick else 3)
  tokens = tuple(tokens or (QUICK["tokens"] if quick else TOKENS))
  warmup = QUICK["warmup"] if quick else 1
  dtype = bench_lib.default_dtype(device)
  rows = []
  for k in tokens:
    jx = bench_lib.measure_jax_adaptive(variant, frames, tracks, dtype, num_tokens=k, steps=steps,
                                        warmup=warmup)
    rows.append({"num_tokens": k, "class_tokens": list(bench_lib.token_names(k)), "jax": jx})
  base = next((r for r in rows if r["num_tokens"] == 2), rows[0])["jax"]
  for r in rows:
    jx = r["jax"]
    r["step_s_over_k2"] = jx["step_s"] / base["step_s"]
    r["flops_over_k2"] = jx["flops_per_step"] / base["flops_per_step"] if jx["flops_per_step"] else None
    print(format_row(r), flush=True)
  return results.header({
      "benchmark": SECTION, "command": command, "quick": quick,
      "settings": {"variant": variant, "frames": frames, "tracks": rows[0]["jax"]["tracks"],
                   "activations": dtype, "steps": steps, "warmup": warmup, "tokens": list(tokens)},
      "rows": rows,
  }, jax.devices())


COLUMNS = ("K", "losses", "s/step", "views/s", "tokens/s", "FLOPs/step", "mem", "step vs K=2", "FLOPs vs K=2")


def format_row(r) -> str:
  jx = r["jax"]
  kinds = "/".join("cpsd" if i % 2 == 0 else "ntxent" for i in range(r["num_tokens"]))
  cells = (r["num_tokens"], kinds, f"{jx['step_s']:.3f}", f"{jx['views_per_s']:.1f}",
           results.eng(jx["tokens_per_s"]), results.eng(jx["flops_per_step"]),
           results.eng(jx["memory"].get("peak_estimate_bytes"), "B"),
           f"{r['step_s_over_k2']:.3f}", results.fmt(r["flops_over_k2"], ".3f"))
  return results.table_row(cells)


def markdown(report: dict) -> str:
  s = report["settings"]
  lines = results.preamble(report, "Cost of more class tokens (`benchmarks/class_tokens.py`)")
  lines += [
      f"Variant {s['variant']}, T = {s['frames']} frames, {s['tracks']} tracks ({3 * s['tracks']} views) "
      f"per step on one device, activations {s['activations']}; median of {s['steps']} steps. "
      "Losses alternate CPSD / NT-Xent over the tokens (K=1: equivariant only; K=2: MT2).", "",
      *results.table_header(COLUMNS),
  ]
  lines += [format_row(r) for r in report["rows"]]
  return "\n".join(lines)


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  results.add_shape_args(parser)
  parser.add_argument("--tokens", default="",
                      help=f"comma-separated K (default {','.join(map(str, TOKENS))}; "
                      f"{','.join(map(str, QUICK['tokens']))} with --quick)")
  args = parser.parse_args(argv)
  host.use_cpu_cores()  # Before JAX starts: the CPU as mt2 train uses it.
  print(results.table_row(COLUMNS))
  report = run(args.quick, args.variant or None, args.frames or None, args.tracks or None,
               tuple(int(k) for k in args.tokens.split(",") if k),
               command=results.command_line("benchmarks/class_tokens.py", argv))
  results.write(report, args.out, args.results_md, SECTION, markdown)


if __name__ == "__main__":
  main()
