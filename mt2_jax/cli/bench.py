r"""`mt2 bench [--out FILE.json] [--quick] [--only=train_step,class_tokens,scaling]`: benchmarks.

Runs the benchmark scripts of the source checkout, `python benchmarks/NAME.py`,
one after another, each in its own process with its output streamed here, and
writes one JSON with a report per benchmark (and, unless --quick, their
sections of benchmarks/RESULTS.md):

  train_step    tiny/small/base x 173/646 frames: JAX step vs the PyTorch
                reference (eager, torch.compile), views/s, tokens/s, FLOP/s,
                MFU, memory, and the input pipeline's headroom
  class_tokens  step time for K = 1, 2, 3, 4, 8 class tokens
  scaling       1, 2, 4, 8 devices at a fixed per-device batch (8 fake CPU
                devices in a subprocess on a CPU)

Sizes adapt to the device (see benchmarks/train_step.py); --quick runs each
at its smallest size (the test model on 2 tracks of 32 frames; K = 2, 3; 1 and
2 devices), what the tests run. The scripts live in the source tree (benchmarks/), not
in the installed package: run from a checkout (`pip install -e .`). Each also
runs on its own, with more flags (`python benchmarks/train_step.py --help`).
A benchmark that fails does not stop the others; the exit status is then 1.

On a CPU, `import mt2_jax` tunes glibc's malloc (mt2_jax/host.py): without it
every step faults its temporaries in afresh, ~30% of a CPU step.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from absl import app
from absl import flags

BENCHMARKS = ("train_step", "class_tokens", "scaling")
# The checkout this package runs from: mt2_jax/cli/bench.py -> its root.
ROOT = pathlib.Path(__file__).resolve().parents[2]

# allow_override: other subcommands have --out too (mt2_jax/cli/__init__.py).
_OUT = flags.DEFINE_string("out", None, "JSON file for all results (default: print only).",
                           allow_override=True)
_QUICK = flags.DEFINE_bool("quick", False, "Every benchmark at its smallest size.",
                           allow_override=True)
_ONLY = flags.DEFINE_list("only", list(BENCHMARKS), f"Benchmarks to run, from {', '.join(BENCHMARKS)}.",
                          allow_override=True)
_RESULTS_MD = flags.DEFINE_string(
    "results_md", None,
    "Markdown file whose bench_* sections are rewritten (a relative path is taken from the "
    "repository root); default benchmarks/RESULTS.md, or none with --quick; '' to skip.",
    allow_override=True)
_TORCH = flags.DEFINE_bool("torch", True, "Time the PyTorch reference (needs the [torch] extra).",
                           allow_override=True)
_TORCH_COMPILE = flags.DEFINE_bool("torch_compile", True,
                                   "Also time torch.compile (slow to compile on CPU).",
                                   allow_override=True)
_PIPELINE = flags.DEFINE_bool("pipeline", True, "Measure the input pipeline's headroom over the step.",
                              allow_override=True)


def benchmarks_dir(root: str | os.PathLike | None = None) -> pathlib.Path:
  """The benchmarks folder of `root` (default ROOT); a UsageError saying what to do if absent."""
  path = pathlib.Path(root or ROOT) / "benchmarks"
  missing = [f"{name}.py" for name in BENCHMARKS if not (path / f"{name}.py").is_file()]
  if missing:
    raise app.UsageError(
        f"mt2 bench runs the scripts in benchmarks/ of a source checkout, and {path} lacks "
        f"{', '.join(missing)} (an installed wheel has no benchmarks/): clone the repository, "
        "`pip install -e .` in it, and run mt2 bench (or python benchmarks/NAME.py) there")
  return path


def script_args(directory: pathlib.Path, name: str, out: str, results_md: str = "",
                quick: bool = False, torch_: bool = True, torch_compile: bool = True,
                pipeline: bool = True) -> list[str]:
  """The command line of `directory`/`name`.py, mt2 bench's flags translated to the script's."""
  args = [sys.executable, str(directory / f"{name}.py"), f"--out={out}", f"--results_md={results_md}"]
  if quick:
    args.append("--quick")
  if name == "train_step":  # The only one with a torch side and an input pipeline.
    args += [f"--no-{flag}" for flag, on in (("torch", torch_), ("torch_compile", torch_compile),
                                               ("pipeline", pipeline)) if not on]
  return args


def run(only: Sequence[str] = BENCHMARKS, quick: bool = False, torch_: bool = True,
        torch_compile: bool = True, pipeline: bool = True, results_md: str = "",
        root: str | os.PathLike | None = None) -> dict:
  """Runs the chosen benchmarks in the order of BENCHMARKS; returns {name: report}.

  A report is the script's JSON plus `wall_s`, or {error, wall_s} if the
  script failed. Each script writes its own section of `results_md` ('' for
  none). A process per benchmark: each starts JAX afresh with the devices it
  needs (train_step splits the CPU into per-core devices before JAX starts).
  """
  unknown = set(only) - set(BENCHMARKS)
  if unknown:
    raise app.UsageError(f"--only: unknown {sorted(unknown)}; known: {', '.join(BENCHMARKS)}")
  directory = benchmarks_dir(root)  # Before anything runs: says what to do if absent.
  # Unbuffered: rows show as they are measured, also through a pipe (| tee).
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  reports = {}
  with tempfile.TemporaryDirectory(prefix="mt2_bench_") as tmp:
    for name in BENCHMARKS:
      if name not in only:
        continue
      out = pathlib.Path(tmp) / f"{name}.json"
      args = script_args(directory, name, str(out), results_md, quick, torch_, torch_compile, pipeline)
      print(f"\n== {name} ==", flush=True)
      t0 = time.perf_counter()
      code = subprocess.run(args, cwd=directory.parent, env=env, check=False).returncode
      if code == 0 and out.exists():
        report = json.loads(out.read_text())
      else:
        report = {"error": f"{pathlib.Path(args[1]).name} exited with status {code}"}
        print(f"mt2 bench: {name}: {report['error']}", file=sys.stderr, flush=True)
      report["wall_s"] = time.perf_counter() - t0
      reports[name] = report
  return reports


def command(only: Sequence[str] = BENCHMARKS, quick: bool = False, torch_: bool = True,
            torch_compile: bool = True, pipeline: bool = True) -> str:
  """`mt2 bench` with the flags that change what is measured (not where it is written)."""
  parts = ["mt2 bench"] + (["--quick"] if quick else [])
  if list(only) != list(BENCHMARKS):
    parts.append(f"--only={','.join(only)}")
  parts += [f"--no{name}" for name, on in (("torch", torch_), ("torch_compile", torch_compile),
                                            ("pipeline", pipeline)) if not on]
  return " ".join(parts)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  quick = _QUICK.value
  results_md = _RESULTS_MD.value
  if results_md is None:
    results_md = "" if quick else "benchmarks/RESULTS.md"
  chosen = dict(only=_ONLY.value, quick=quick, torch_=_TORCH.value,
                torch_compile=_TORCH_COMPILE.value, pipeline=_PIPELINE.value)
  reports = run(**chosen, results_md=results_md)
  if _OUT.value:
    out = pathlib.Path(_OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"quick": quick, "command": command(**chosen), **reports}, indent=1))
    print(f"\nwrote {out}")
  failed = [name for name, report in reports.items() if "error" in report]
  written = [f"bench_{name}" for name in reports if name not in failed]
  if results_md and written:
    print(f"updated {results_md}: {', '.join(written)}")
  if failed:
    print(f"mt2 bench: failed: {', '.join(failed)} (their output is above)", file=sys.stderr)
    sys.exit(1)
