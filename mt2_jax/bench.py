r"""`mt2 bench [--out FILE.json] [--quick] [--only=train_step,class_tokens,scaling]`: benchmarks.

Runs the benchmarks under `benchmarks/` in one process and writes one JSON
with a report per benchmark (and, unless --quick, their sections of
benchmarks/RESULTS.md):

  train_step    tiny/small/base x 173/646 frames: JAX step vs the PyTorch
                reference (eager, torch.compile), views/s, tokens/s, FLOP/s,
                MFU, memory, and the input pipeline's headroom
  class_tokens  step time for K = 1, 2, 3, 4, 8 class tokens
  scaling       1, 2, 4, 8 devices at a fixed per-device batch (8 fake CPU
                devices in a subprocess on a CPU)

Sizes adapt to the device (see benchmarks/train_step.py); --quick runs each
at its smallest size in seconds. The benchmark modules live in the source
tree (benchmarks/), not in the installed package: run from a checkout
(`pip install -e .`).

On a CPU, `import mt2_jax` tunes glibc's malloc (mt2_jax/host.py): without it
every step faults its temporaries in afresh, ~30% of a CPU step.
"""

import json
import pathlib
import sys
import time

from absl import app
from absl import flags

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCHMARKS = ("train_step", "class_tokens", "scaling")


def _define(define, name, default, help_, *args, **kwargs):
  """Defines --name unless another mt2 module already did (several share --out)."""
  if name not in flags.FLAGS:
    define(name, default, *args, help=help_, allow_override=True, **kwargs)


_define(flags.DEFINE_string, "out", None, "JSON file for all results (default: print only).")
_define(flags.DEFINE_bool, "quick", False, "Every benchmark at its smallest size (seconds).")
_define(flags.DEFINE_list, "only", list(BENCHMARKS), f"Benchmarks to run, from {', '.join(BENCHMARKS)}.")
_define(flags.DEFINE_string, "results_md", None,
        "Markdown file whose bench_* sections are rewritten; default benchmarks/RESULTS.md, "
        "or none with --quick; '' to skip.")
_define(flags.DEFINE_bool, "torch", True, "Time the PyTorch reference (needs the [torch] extra).")
_define(flags.DEFINE_bool, "torch_compile", True, "Also time torch.compile (slow to compile on CPU).")
_define(flags.DEFINE_bool, "pipeline", True, "Measure the input pipeline's headroom over the step.")

FLAGS = flags.FLAGS


def _import_benchmarks():
  """benchmarks.{train_step, class_tokens, scaling}, from the source tree."""
  if not (ROOT / "benchmarks" / "train_step.py").exists():
    raise app.UsageError(f"benchmarks/ not found next to {pathlib.Path(__file__).parent}: "
                         "mt2 bench runs from a source checkout (pip install -e .)")
  if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
  from benchmarks import class_tokens
  from benchmarks import scaling
  from benchmarks import train_step
  return {"train_step": train_step, "class_tokens": class_tokens, "scaling": scaling}


def run(only=BENCHMARKS, quick=False, torch_=True, torch_compile=True, pipeline=True,
        results_md=None, command="mt2 bench") -> dict:
  """Runs the chosen benchmarks; returns {name: report} and writes RESULTS.md sections."""
  unknown = set(only) - set(BENCHMARKS)
  if unknown:
    raise app.UsageError(f"--only: unknown {sorted(unknown)}; known: {', '.join(BENCHMARKS)}")
  modules = _import_benchmarks()
  reports = {}
  for name in BENCHMARKS:
    if name not in only:
      continue
    module = modules[name]
    print(f"\n== {name} ==", flush=True)
    print("| " + " | ".join(module.COLUMNS) + " |", flush=True)
    t0 = time.perf_counter()
    if name == "train_step":
      report = module.run(quick, torch_=torch_, torch_compile=torch_compile, pipeline=pipeline,
                          command=command)
    else:
      report = module.run(quick, command=command)
    report["wall_s"] = time.perf_counter() - t0
    reports[name] = report
    if results_md:
      modules["train_step"].results.update_section(module.SECTION, module.markdown(report), results_md)
  return reports


def _command() -> str:
  """`mt2 bench` with the flags that change what is measured (not where it is written)."""
  parts = ["mt2 bench"]
  if FLAGS.quick:
    parts.append("--quick")
  if list(FLAGS.only) != list(BENCHMARKS):
    parts.append(f"--only={','.join(FLAGS.only)}")
  parts += [f"--no{name}" for name in ("torch", "torch_compile", "pipeline") if not FLAGS[name].value]
  return " ".join(parts)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  sys.path.insert(0, str(ROOT))
  from mt2_jax import host
  host.use_cpu_cores()  # Before JAX starts: the CPU as mt2 train uses it.
  results_md = FLAGS.results_md
  if results_md is None:
    results_md = "" if FLAGS.quick else "benchmarks/RESULTS.md"
  command = _command()
  reports = run(FLAGS.only, FLAGS.quick, FLAGS.torch, FLAGS.torch_compile, FLAGS.pipeline,
                results_md, command)
  if FLAGS.out:
    out = pathlib.Path(FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"quick": FLAGS.quick, "command": command, **reports}, indent=1))
    print(f"\nwrote {out}")
  if results_md:
    print(f"updated {results_md}: " + ", ".join(f"bench_{n}" for n in reports))


if __name__ == "__main__":
  app.run(main)
