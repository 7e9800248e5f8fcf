r"""Data-parallel scaling: the train step on 1, 2, 4 and 8 devices at a fixed per-device batch.

  python benchmarks/scaling.py                 # tiny at 173 frames
  python benchmarks/scaling.py --quick         # test model, 1 and 2 devices (tests)

On GPUs and TPUs it uses the real devices (counts above what the host has
are reported as skipped). On a CPU it runs a subprocess with 8 fake devices
(`--xla_force_host_platform_device_count=8`, which must be set before JAX
starts): they share the same cores, so the step time grows with the device
count and "efficiency" measures the cost of sharding (the gathers NT-Xent's
global negatives need, the gradient all-reduce), not a speed-up.

efficiency(n) = views/s on n devices / (n x views/s on 1 device).
"""

import argparse
import json
import os
import subprocess
import sys

import jax

import results  # benchmarks/: a script's folder is on sys.path.
import train_step as bench_lib

SECTION = "bench_scaling"
COUNTS = (1, 2, 4, 8)
# Two devices already shard the batch (NT-Xent's gathers, the gradient
# all-reduce) as eight do, so quick needs no more.
QUICK = dict(variant="test", frames=32, tracks_per_device=2, steps=2, warmup=0, counts=(1, 2))
FAKE_DEVICES = 8


def measure_counts(variant, frames, tracks_per_device, counts, steps, warmup) -> list[dict]:
  """One measure_jax per device count over the first n local devices."""
  devices = jax.devices()
  dtype = bench_lib.default_dtype(devices[0])
  rows = []
  for n in counts:
    if n > len(devices):
      rows.append({"devices": n, "skipped": f"only {len(devices)} {devices[0].platform} devices"})
      continue
    jx = bench_lib.measure_jax_adaptive(variant, frames, tracks_per_device * n, dtype,
                                        devices=devices[:n], steps=steps, warmup=warmup)
    rows.append({"devices": n, "jax": jx})
  base = next((r["jax"] for r in rows if r["devices"] == 1 and "jax" in r), None)
  for r in rows:
    if "jax" in r and base:
      r["speedup"] = r["jax"]["views_per_s"] / base["views_per_s"]
      r["efficiency"] = r["speedup"] / r["devices"]
  return rows


def _fake_cpu_rows(args: list[str], timeout_s: int = 900) -> tuple[list[dict], str]:
  """Runs this file with 8 fake CPU devices; returns its rows and its XLA_FLAGS."""
  env = dict(os.environ)
  flags = env.get("XLA_FLAGS", "")
  flags = " ".join(f for f in flags.split() if not f.startswith("--xla_force_host_platform_device_count"))
  env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={FAKE_DEVICES}".strip()
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", *args], env=env,
                        capture_output=True, text=True, timeout=timeout_s, cwd=bench_lib.ROOT)
  if proc.returncode != 0:
    raise RuntimeError(f"scaling worker failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
  last = [line for line in proc.stdout.splitlines() if line.startswith("{")][-1]
  return json.loads(last)["rows"], env["XLA_FLAGS"]


def run(quick: bool = False, variant=None, frames=None, tracks_per_device=None, counts=None,
        command: str = "") -> dict:
  device = jax.devices()[0]
  counts = tuple(counts or (QUICK["counts"] if quick else COUNTS))
  variant = variant or (QUICK["variant"] if quick else "tiny")
  frames = frames or (QUICK["frames"] if quick else 173)
  tracks = tracks_per_device or (QUICK["tracks_per_device"] if quick else
                                 2 if bench_lib.is_cpu(device) else
                                 bench_lib.default_tracks(device, variant, frames))
  steps = QUICK["steps"] if quick else 3
  warmup = QUICK["warmup"] if quick else 1
  if bench_lib.is_cpu(device):
    args = [f"--variant={variant}", f"--frames={frames}", f"--tracks_per_device={tracks}",
            f"--counts={','.join(map(str, counts))}", f"--steps={steps}", f"--warmup={warmup}"]
    rows, flags = _fake_cpu_rows(args)
    kind = f"{FAKE_DEVICES} fake CPU devices sharing {os.cpu_count()} cores (subprocess)"
  else:
    rows, flags = measure_counts(variant, frames, tracks, counts, steps, warmup), os.environ.get("XLA_FLAGS", "")
    kind = f"{jax.device_count()} x {device.device_kind}"
  for r in rows:
    print(format_row(r), flush=True)
  report = results.header({
      "benchmark": SECTION, "command": command, "quick": quick,
      "settings": {"variant": variant, "frames": frames, "tracks_per_device": tracks, "steps": steps,
                   "warmup": warmup, "counts": list(counts), "devices_kind": kind,
                   "activations": bench_lib.default_dtype(device)},
      "rows": rows,
  }, jax.devices())
  report["xla_flags"] = flags
  return report


COLUMNS = ("devices", "tracks", "s/step", "views/s", "speedup", "efficiency", "mem/device")


def format_row(r) -> str:
  if "jax" not in r:
    return f"| {r['devices']} | {r['skipped']} | | | | | |"
  jx = r["jax"]
  cells = (r["devices"], jx["tracks"], f"{jx['step_s']:.3f}", f"{jx['views_per_s']:.1f}",
           results.fmt(r.get("speedup")), results.fmt(r.get("efficiency")),
           results.eng(jx["memory"].get("peak_estimate_bytes"), "B"))
  return results.table_row(cells)


def markdown(report: dict) -> str:
  s = report["settings"]
  lines = results.preamble(report, "Data-parallel scaling (`benchmarks/scaling.py`)")
  lines += [
      f"Variant {s['variant']}, T = {s['frames']} frames, {s['tracks_per_device']} tracks per device "
      f"(batch grows with the device count), activations {s['activations']}; devices: "
      f"{s['devices_kind']}. efficiency = views/s on n devices / (n x views/s on 1). "
      + ("Fake CPU devices share the same cores: efficiency ~1/n is expected and shows the cost of "
         "sharding, not a speed-up." if "fake" in s["devices_kind"] else ""), "",
      *results.table_header(COLUMNS),
  ]
  lines += [format_row(r) for r in report["rows"]]
  return "\n".join(lines)


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  results.add_shape_args(parser, tracks_flag="--tracks_per_device")
  parser.add_argument("--counts", default="",
                      help=f"comma-separated device counts (default {','.join(map(str, COUNTS))}; "
                      f"{','.join(map(str, QUICK['counts']))} with --quick)")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  counts = tuple(int(n) for n in args.counts.split(",") if n)
  if args.worker:  # Inside the fake-device subprocess: measure, print JSON.
    rows = measure_counts(args.variant, args.frames, args.tracks_per_device, counts, args.steps, args.warmup)
    print(json.dumps({"rows": rows}))
    return
  print(results.table_row(COLUMNS))
  report = run(args.quick, args.variant or None, args.frames or None, args.tracks_per_device or None,
               counts, command=results.command_line("benchmarks/scaling.py", argv))
  results.write(report, args.out, args.results_md, SECTION, markdown)


if __name__ == "__main__":
  main()
