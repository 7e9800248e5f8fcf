"""Shared by the benchmarks: the machine they ran on, and their part of RESULTS.md.

Each benchmark owns one section of benchmarks/RESULTS.md, between
`<!-- NAME:start -->` and `<!-- NAME:end -->`, and rewrites only that section,
so benchmarks run at different times (and on different machines) share the
file without clobbering each other. The benchmarks are scripts: Python puts
benchmarks/ on sys.path, so they import this module as `results`.

  import results
  results.update_section("input_pipeline", markdown)

Also here: the header every report starts with (`header`), the number
formats of the tables (`fmt`, `eng`) and the top of a section (`preamble`).
"""

import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_PATH = "benchmarks/RESULTS.md"
_HEADER = ("# Benchmark results\n\n"
           "Each section is written by the benchmark named in it; re-running one "
           "replaces only its own section.\n")


def _resolve(path) -> pathlib.Path:
  """Relative paths are taken from the repository root, wherever one runs."""
  path = pathlib.Path(path)
  return path if path.is_absolute() else ROOT / path


def update_section(name: str, markdown: str, path=DEFAULT_PATH) -> pathlib.Path:
  """Replaces (or appends) the `name` section of the results file; returns its path."""
  path = _resolve(path)
  start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
  block = f"{start}\n{markdown.strip()}\n{end}"
  text = path.read_text() if path.exists() else _HEADER
  pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
  if pattern.search(text):
    text = pattern.sub(lambda _: block, text, count=1)
  else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
  tmp.write_text(text)
  os.replace(tmp, path)
  return path


def cpu_model() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.lower().startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def machine_description() -> str:
  """'CPU model, N cores (M usable), OS': the machine a result was measured on."""
  cores, usable = os.cpu_count() or 1, usable_cores()
  cores_text = f"{cores} cores" + (f" ({usable} usable)" if usable != cores else "")
  return f"{cpu_model()}, {cores_text}, {platform.system()} {platform.release()}"


def versions(packages=("jax", "jaxlib", "flax", "grain", "numpy", "tensorflow-datasets")) -> str:
  """'Python 3.11.7, jax 0.x, ...' for the packages that are installed."""
  parts = [f"Python {platform.python_version()}"]
  for name in packages:
    try:
      parts.append(f"{name} {importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
      pass
  return ", ".join(parts)


def command_line(script: str, argv) -> str:
  """The command that reproduces the numbers, without where they were written."""
  args, skip = [], False
  for a in argv:
    if skip:
      skip = False
    elif a in ("--out", "--results_md"):
      skip = True
    elif not a.startswith(("--out=", "--results_md=")):
      args.append(a)
  return " ".join([f"python {script}"] + args)


def table_row(cells) -> str:
  """One markdown table row."""
  return "| " + " | ".join(str(c) for c in cells) + " |"


def table_header(columns, left: int = 0) -> list[str]:
  """A markdown table's header and separator rows; the first `left` columns left-aligned."""
  return [table_row(columns), "|" + "|".join(":--" if i < left else "--:" for i in range(len(columns))) + "|"]


def add_shape_args(parser, tracks_flag: str = "--tracks") -> None:
  """The arguments every per-shape benchmark script takes (argparse)."""
  parser.add_argument("--quick", action="store_true", help="smallest size, seconds (tests)")
  parser.add_argument("--variant", default="")
  parser.add_argument("--frames", type=int, default=0)
  parser.add_argument(tracks_flag, type=int, default=0)
  parser.add_argument("--out", default="", help="JSON file")
  parser.add_argument("--results_md", default=DEFAULT_PATH, help="'' to skip")


# What a train-step measurement depends on, named in every report's header.
STEP_PACKAGES = ("jax", "jaxlib", "flax", "optax", "torch", "numpy")


def header(report: dict, devices, packages=STEP_PACKAGES) -> dict:
  """`report` after the fields every train-step report starts with: where, when, with what.

  devices: `jax.devices()`, passed in so that this module needs no JAX.
  """
  device = devices[0]
  return {
      "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
      "machine": machine_description(),
      "device_kind": device.device_kind,
      "platform": device.platform,
      "num_devices": len(devices),
      "versions": versions(packages),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      # Other work on the machine slows every row: say how busy it was.
      "load_average_before": [round(x, 2) for x in os.getloadavg()],
      **report,
  }


def fmt(x, spec: str = ".2f", none: str = "-") -> str:
  """`x` formatted by `spec`, or `none` for a value that was not measured."""
  return none if x is None else format(x, spec)


def eng(x, unit: str = "") -> str:
  """`x` with an SI prefix (1.23 G, 456 k), for FLOPs, bytes and rates that span decades."""
  if x is None:
    return "-"
  for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(x) >= scale:
      return f"{x / scale:.2f} {suffix}{unit}"
  return f"{x:.0f} {unit}".strip()


def preamble(report: dict, title: str) -> list[str]:
  """The top of a train-step section: title, device, machine, versions, command, load."""
  return [
      f"## {title}", "",
      f"Device: {report['device_kind']} ({report['platform']}, {report['num_devices']} visible); "
      f"machine: {report['machine']}.  ",
      f"Versions: {report['versions']}.  ",
      f"XLA_FLAGS: `{report['xla_flags'] or '(none)'}`.  ",
      f"Measured {report['date']} with `{report['command']}`; load average before: "
      f"{report['load_average_before'][0]:.1f} (other work on the machine slows every number).", "",
  ]


def write(report: dict, out: str | None, results_md: str | None, section: str, to_markdown) -> None:
  """`report` as JSON to `out` and as `to_markdown(report)` to its section of `results_md`."""
  if out:
    pathlib.Path(out).write_text(json.dumps(report, indent=1))
  if results_md:
    update_section(section, to_markdown(report), results_md)
