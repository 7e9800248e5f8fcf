"""`mt2 prepare` speed: audio seconds processed per CPU second (and per wall second).

  .venv/bin/python benchmarks/prepare.py [--seconds 600] [--workers 1,2] [--out prepare.json]

Renders a small corpus of chorales with our synthesizer (or uses --audio),
runs `prepare` into a fresh folder for each worker count, and writes a table
to stdout, JSON to --out, and its section of benchmarks/RESULTS.md.
CPU seconds include the worker processes (RUSAGE_CHILDREN).
"""

import argparse
import json
import pathlib
import resource
import shutil
import sys
import tempfile
import time

from mt2_jax.data import corpus
from mt2_jax.data import prepare

import results  # benchmarks/results.py: a script's folder is on sys.path.


def cpu_seconds() -> float:
  own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(audio: pathlib.Path, workers: int) -> dict:
  out = pathlib.Path(tempfile.mkdtemp(prefix="mt2_bench_prepare_"))
  try:
    c0, t0 = cpu_seconds(), time.time()
    s = prepare.prepare(audio, out, num_workers=workers, progress=False)
    cpu, wall = cpu_seconds() - c0, time.time() - t0
  finally:
    shutil.rmtree(out, ignore_errors=True)
  return {"workers": workers, "files": s.files, "records": s.records, "audio_seconds": s.audio_seconds,
          "wall_seconds": wall, "cpu_seconds": cpu,
          "audio_s_per_cpu_s": s.audio_seconds / cpu, "audio_s_per_wall_s": s.audio_seconds / wall}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--audio", default=None, help="audio folder (default: render chorales)")
  p.add_argument("--seconds", type=float, default=600.0, help="audio to render when --audio is unset")
  p.add_argument("--workers", default="1,2")
  p.add_argument("--out", default=None)
  p.add_argument("--no_results_md", action="store_true")
  a = p.parse_args()
  tmp = None
  if a.audio:
    audio = pathlib.Path(a.audio)
  else:
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="mt2_bench_audio_"))
    pieces = max(1, int(a.seconds // 30))
    corpus.make_corpus(tmp, num_pieces=pieces, variants_per_piece=1, max_seconds=30.0, notes=False,
                       progress=False)
    audio = tmp / "chorales"
  rows = [measure(audio, int(w)) for w in a.workers.split(",")]
  if tmp:
    shutil.rmtree(tmp, ignore_errors=True)
  header = "| workers | files | audio s | wall s | CPU s | audio s / CPU s | audio s / wall s |\n|--:|--:|--:|--:|--:|--:|--:|"
  body = "\n".join(f"| {r['workers']} | {r['files']} | {r['audio_seconds']:.0f} | {r['wall_seconds']:.1f} | "
                   f"{r['cpu_seconds']:.1f} | {r['audio_s_per_cpu_s']:.0f} | {r['audio_s_per_wall_s']:.0f} |"
                   for r in rows)
  print(header + "\n" + body)
  if a.out:
    pathlib.Path(a.out).write_text(json.dumps(rows, indent=2))
  if not a.no_results_md:
    cmd = "python benchmarks/prepare.py " + " ".join(sys.argv[1:])
    results.update_section("prepare", f"## Prepare (`benchmarks/prepare.py`)\n\nMachine: {results.machine_description()}  \n"
                           f"Command: `{cmd.strip()}`  \nCQT of synthesized chorales (22.05 kHz), "
                           f"including audio decoding, resampling and writing shards.\n\n{header}\n{body}")


if __name__ == "__main__":
  main()
