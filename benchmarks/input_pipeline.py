r"""Input pipeline throughput: views per second on one host, by worker count.

  python benchmarks/input_pipeline.py                        # synthetic data, 0/1/2/4 workers
  python benchmarks/input_pipeline.py --data DATA --workers 0,2,8 --batch_size 128
  python benchmarks/input_pipeline.py --quick                # smallest run (tests use it)

Times `mt2_jax.data.pipeline` as training uses it (host-local batches of
batch_size tracks, each giving x_a, x_b and x_a_shift): for each worker count,
the time to the first batch (start-up, worker spawn included), then
`--batches` batches after `--warmup`. Without --data a synthetic dataset is
prepared in a temporary folder; it fits in the page cache, so this measures
the CPU cost of reading, decoding and cropping, not the disk.

Prints a table, writes JSON (--out) and rewrites its own section of
benchmarks/RESULTS.md (--results_md, '' to skip).
"""

import datetime
import json
import os
import pathlib
import sys
import tempfile
import time

from absl import app
from absl import flags
import ml_collections
import numpy as np

from mt2_jax.data import prepare as prepare_lib

import results  # benchmarks/results.py: a script's folder is on sys.path.

SECTION = "input_pipeline"
QUICK = dict(segment_frames=64, batch_size=4, workers="0,1", batches=3, warmup=1,
             files=4, seconds=4.0, dtypes="float32")
FULL = dict(segment_frames=646, batch_size=32, workers="0,1,2,4", batches=20, warmup=2,
            files=32, seconds=35.0, dtypes="float32,float16")


_DATA = flags.DEFINE_string("data", None,
                            "Prepared dataset; default: a synthetic one in a temp dir.")
_QUICK = flags.DEFINE_bool("quick", False,
                           "Smallest setting: tiny data, few batches, 0 and 1 workers.")
_WORKERS = flags.DEFINE_list("workers", None, f"Worker counts (default {FULL['workers']}).")
_BATCH = flags.DEFINE_integer("batch_size", None,
                              f"Tracks per batch (default {FULL['batch_size']}).")
_FRAMES = flags.DEFINE_integer("segment_frames", None,
                               f"Frames per segment (default {FULL['segment_frames']}).")
_BATCHES = flags.DEFINE_integer("batches", None, f"Timed batches (default {FULL['batches']}).")
_WARMUP = flags.DEFINE_integer("warmup", None,
                               f"Untimed batches after the first (default {FULL['warmup']}).")
_PREFETCH = flags.DEFINE_integer("prefetch_buffer_size", 2, "data.prefetch_buffer_size.")
_DTYPES = flags.DEFINE_list("dtypes", None, f"data.dtype of the views, each timed "
                            f"(float32, bfloat16, float16; default {FULL['dtypes']}).")
_OUT = flags.DEFINE_string("out", None, "JSON results file.")
_RESULTS_MD = flags.DEFINE_string(
    "results_md", results.DEFAULT_PATH,
    "Markdown file whose input_pipeline section is rewritten; '' to skip.")


def synthetic_dataset(out_dir, files: int, seconds: float, seed: int = 0, workers: int = 2) -> str:
  """Prepares `files` chords of `seconds` each (random pitches, 22 050 Hz) in out_dir."""
  import soundfile as sf
  out_dir = pathlib.Path(out_dir)
  audio_dir = out_dir / "audio"
  audio_dir.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  sr = 22050
  t = np.arange(int(seconds * sr)) / sr
  for i in range(files):
    pitches = rng.integers(36, 84, size=3)
    x = sum(np.sin(2 * np.pi * 440 * 2 ** ((p - 69) / 12) * t) for p in pitches)
    x = x + 0.01 * rng.standard_normal(t.size)
    sf.write(audio_dir / f"chord{i:03d}.wav", (0.3 * x).astype(np.float32), sr)
  data = out_dir / "data"
  prepare_lib.prepare(audio_dir, data, num_workers=min(workers, os.cpu_count() or 1), progress=False)
  return str(data)


def make_config(data_dir, segment_frames, batch_size, prefetch, dtype) -> ml_collections.ConfigDict:
  from mt2_jax.data.cqt import CQTConfig
  return ml_collections.ConfigDict(dict(
      seed=0, data_dir=str(data_dir), batch_size=batch_size, cqt=CQTConfig().to_dict(),
      data=dict(segment_frames=segment_frames, crop_bins=84, max_offset=12, num_workers=0,
                prefetch_buffer_size=prefetch, dtype=dtype)))


def time_workers(config, workers: int, batches: int, warmup: int) -> dict:
  """Start-up and steady-state rate of the pipeline with `workers` processes."""
  from mt2_jax.data import pipeline
  t0 = time.perf_counter()
  it = pipeline.make_iterator(config, num_workers=workers)
  try:
    next(it)
    startup = time.perf_counter() - t0
    for _ in range(warmup):
      next(it)
    t1 = time.perf_counter()
    for _ in range(batches):
      next(it)
    elapsed = time.perf_counter() - t1
  finally:
    it.close()
  tracks = batches * config.batch_size
  return {"workers": workers, "dtype": config.data.dtype, "batches": batches,
          "seconds": round(elapsed, 4), "startup_s": round(startup, 3), "batch_ms": round(1000 * elapsed / batches, 2),
          "tracks_per_s": round(tracks / elapsed, 2),
          "views_per_s": round(3 * tracks / elapsed, 2)}


def markdown(report: dict) -> str:
  s = report["settings"]
  lines = [
      "## Input pipeline (`benchmarks/input_pipeline.py`)", "",
      f"Machine: {report['machine']}.  ",
      f"Versions: {report['versions']}.  ",
      f"Measured {report['date']} with `{report['command']}` "
      f"(load average before: {report['load_average'][0]:.1f}).", "",
      f"Host-local batches of {s['batch_size']} tracks, segment_frames={s['segment_frames']}, "
      f"crop_bins={s['crop_bins']}, "
      f"prefetch_buffer_size={s['prefetch_buffer_size']}; "
      f"{s['batches']} timed batches after {s['warmup']} warm-up; data: {s['dataset']} "
      f"({s['records']} records, in the page cache). A view is one of x_a, x_b, x_a_shift; "
      "a track gives three.", "",
      "| workers | dtype | views/s | tracks/s | ms/batch | start-up s |",
      "|--:|:--|--:|--:|--:|--:|",
  ]
  for r in report["results"]:
    lines.append(f"| {r['workers']} | {r['dtype']} | {r['views_per_s']:.1f} | "
                 f"{r['tracks_per_s']:.1f} | {r['batch_ms']:.1f} | {r['startup_s']:.2f} |")
  return "\n".join(lines)


def run(data=None, quick=False, workers=None, batch_size=None, segment_frames=None,
        batches=None, warmup=None, prefetch=2, dtypes=None, command="") -> dict:
  base = QUICK if quick else FULL
  workers = [int(w) for w in (workers or base["workers"].split(","))]
  batch_size = batch_size or base["batch_size"]
  segment_frames = segment_frames or base["segment_frames"]
  batches = batches or base["batches"]
  warmup = base["warmup"] if warmup is None else warmup
  dtypes = list(dtypes or base["dtypes"].split(","))
  with tempfile.TemporaryDirectory(prefix="mt2_bench_") as tmp:
    if data:
      dataset_name = str(data)
    else:
      # Quick: one process; worker processes, each importing librosa, would
      # take longer to start than its few seconds of audio take to prepare.
      data = synthetic_dataset(tmp, base["files"], base["seconds"], workers=1 if quick else 2)
      dataset_name = f"synthetic, {base['files']} chords of {base['seconds']:g} s"
    from mt2_jax.data import pipeline
    configs = [make_config(data, segment_frames, batch_size, prefetch, d) for d in dtypes]
    records = len(pipeline.make_plan(configs[0]).records)
    load = os.getloadavg()
    rows = [time_workers(c, w, batches, warmup) for c in configs for w in workers]
  return {
      "benchmark": SECTION,
      "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
      "command": command,
      "machine": results.machine_description(),
      "cpu_model": results.cpu_model(),
      "cores": os.cpu_count(),
      "versions": results.versions(),
      # Other work on the machine slows every row: say how busy it was.
      "load_average": [round(x, 2) for x in load],
      "settings": {"quick": quick, "batch_size": batch_size, "segment_frames": segment_frames,
                   "crop_bins": 84, "dtypes": dtypes, "prefetch_buffer_size": prefetch,
                   "batches": batches, "warmup": warmup, "dataset": dataset_name,
                   "records": records},
      "results": rows,
  }


def main(argv):
  del argv
  command = results.command_line("benchmarks/input_pipeline.py", sys.argv[1:])
  report = run(data=_DATA.value, quick=_QUICK.value, workers=_WORKERS.value,
               batch_size=_BATCH.value, segment_frames=_FRAMES.value, batches=_BATCHES.value,
               warmup=_WARMUP.value, prefetch=_PREFETCH.value, dtypes=_DTYPES.value,
               command=command.strip())
  print(f"input pipeline on {report['machine']}")
  print(f"{'workers':>8} {'dtype':>8} {'views/s':>10} {'tracks/s':>10} {'ms/batch':>9} "
        f"{'startup s':>10}")
  for r in report["results"]:
    print(f"{r['workers']:>8} {r['dtype']:>8} {r['views_per_s']:>10.1f} "
          f"{r['tracks_per_s']:>10.1f} {r['batch_ms']:>9.1f} {r['startup_s']:>10.2f}")
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(json.dumps(report, indent=2))
    print(f"wrote {_OUT.value}")
  if _RESULTS_MD.value:
    path = results.update_section(SECTION, markdown(report), _RESULTS_MD.value)
    print(f"updated the {SECTION} section of {path}")


if __name__ == "__main__":
  app.run(main)
