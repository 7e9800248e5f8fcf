r"""Train-step throughput of mt2_jax against the PyTorch reference, and memory.

  python benchmarks/train_step.py                  # tiny/small/base x 173/646 frames
  python benchmarks/train_step.py --quick          # smallest size, seconds (tests)
  python benchmarks/train_step.py --variants=tiny --frames=173 --no-torch_compile

For each model variant and segment length it times the jitted, donated JAX
train step (`mt2_jax.train.step.make_train_step`, one device) and the same
step in `benchmarks/torch_reference.py` (eager and `torch.compile`), in the
same process on the same device, and reports:

  views/s, tokens/s     a track is 3 views; a view has K + T tokens
  flops_per_step        XLA's cost analysis of the compiled step (fwd + bwd +
                        AdamW), the numerator of achieved FLOP/s and MFU
  mfu                   achieved / the device's dense bf16 peak (PEAK_FLOPS),
                        null where the peak is unknown (CPUs)
  memory                the compiled step's `memory_analysis()` in bytes
  jax_over_torch_*      JAX views/s / torch views/s (> 1: JAX is faster)
  pipeline_over_step    input-pipeline views/s (benchmarks/input_pipeline.py,
                        same segment length) / views/s the step consumes

Batch sizes adapt to the device (`default_tracks`): 128 tracks on a GPU or
TPU (halved on out-of-memory), a few on a CPU, where a full-size step would
take minutes; the table says which. Activations are bfloat16 on accelerators
and float32 on CPUs, where bf16 matmuls are emulated and ~2.4x slower.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import ml_collections
import numpy as np

from mt2_jax import config_defaults
from mt2_jax import config_validation
from mt2_jax import host
from mt2_jax import model as model_lib
from mt2_jax import sharding
from mt2_jax.train import step as train_step_lib

import results  # benchmarks/results.py: a script's folder is on sys.path.

ROOT = pathlib.Path(__file__).resolve().parent.parent
SECTION = "bench_train_step"

# Dense bf16 peak FLOP/s per chip, matched on `jax.Device.device_kind` (first
# substring that matches, so the more specific names come first). Vendor data
# sheets; sparsity excluded.
PEAK_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM; device_kind 'NVIDIA H100 80GB HBM3'.
    ("H200", 989e12),
    ("A100", 312e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),  # v5e.
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12),  # v6e (Trillium).
    ("TPU v6e", 918e12),
)

VARIANTS = ("tiny", "small", "base")
FRAMES = (173, 646)  # 4 s and 15 s of audio.
QUICK = dict(variants=("test",), frames=(32,), tracks=2, steps=2, warmup=0)


def peak_flops(device) -> float | None:
  """Dense bf16 peak FLOP/s of one `device`, or None if not in PEAK_FLOPS."""
  kind = getattr(device, "device_kind", "")
  for pattern, peak in PEAK_FLOPS:
    if pattern.lower() in kind.lower():
      return peak
  return None


def is_cpu(device) -> bool:
  return device.platform == "cpu"


def default_dtype(device) -> str:
  return "float32" if is_cpu(device) else "bfloat16"


def default_tracks(device, variant: str, frames: int) -> int:
  """Tracks per device: 128 on accelerators; on a CPU, ~a 16-track tiny@173 step's worth."""
  if not is_cpu(device):
    return 128
  width = model_lib.VARIANTS[variant]["width"]
  tracks = 16 * (173 / frames) * (192 / width) ** 2
  return int(min(16, max(2, 2 * round(tracks / 2))))  # Even, >= 2 (NT-Xent needs negatives).


def token_names(num_tokens: int) -> tuple[str, ...]:
  """K class-token names: equivariant, contrastive, equivariant1, contrastive1, ..."""
  return tuple(("equivariant" if i % 2 == 0 else "contrastive") + (str(i // 2) if i >= 2 else "")
               for i in range(num_tokens))


def bench_config(variant: str, frames: int, tracks: int, dtype: str = "float32",
                 num_tokens: int = 2) -> ml_collections.ConfigDict:
  """MT2's config at a benchmark shape; K tokens with alternating CPSD / NT-Xent losses.

  K=2 is the paper's MT2 exactly (losses `cpsd` and `ntxent`); K=1 is the
  equivariant-only model; every further token adds another loss of the
  alternating kind, bound to it. The architecture is the paper's (the `paper`
  preset), the one `torch_reference.py` implements, so both sides do the same
  arithmetic; the defaults' hybrid embedding, LayerScale and MLP projector add
  well under 1% of a tiny step's FLOPs, their class-attention blocks 1.4% of
  the forward at 646 frames (mt2_jax.info).
  """
  config = config_defaults.base_config()
  config_defaults.paper(config)
  config.model.variant = variant
  config.model.dtype = dtype
  config.data.segment_frames = frames
  config.batch_size = tracks
  config.total_steps = 1000
  config.optim.warmup_steps = 10  # The step runs at a non-zero learning rate.
  names = token_names(num_tokens)
  config.model.class_tokens = names
  if num_tokens != 2:
    default = config.losses
    losses = {}
    for i, token in enumerate(names):
      kind = "cpsd" if i % 2 == 0 else "ntxent"
      suffix = str(i // 2) if i >= 2 else ""
      losses[kind + suffix] = dict(default[kind].to_dict(), token=token)
    config.losses = ml_collections.ConfigDict(losses)
  config_validation.validate(config)
  return config


def _is_oom(error: Exception) -> bool:
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def _memory(compiled) -> dict:
  """The compiled step's memory analysis, in bytes (empty where the backend has none)."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 -- not every backend implements it.
    return {}
  if m is None:
    return {}
  fields = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
            "temp_size_in_bytes", "generated_code_size_in_bytes")
  out = {f: int(getattr(m, f, 0) or 0) for f in fields}
  # Donated state aliases its outputs: count it once.
  out["peak_estimate_bytes"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"]
                                - out["alias_size_in_bytes"] + out["temp_size_in_bytes"])
  return out


def _flops(compiled) -> float | None:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older JAX: one dict per program.
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None


def default_devices(config) -> list:
  """The devices one benchmark row runs on: the first accelerator, or the CPU.

  The CPU is as many of the per-core devices `host.use_cpu_cores` made as
  `mt2 train` would use for this config (`host.cpu_devices_for`).
  """
  devices = jax.devices()
  if not is_cpu(devices[0]):
    return devices[:1]
  n = host.cpu_devices_for(config.batch_size, len(devices), train_step_lib.tokens_per_track(config))
  return devices[:n]


def measure_jax(config, devices=None, steps: int = 3, warmup: int = 1, partner=None) -> dict:
  """Compiles and times `make_train_step(config)` on `devices` (default_devices).

  The batch is `config.batch_size` tracks in total, split over the devices.
  Returns step_s (median), step_s_all, compile_s, views/tokens per second,
  flops_per_step (per device: XLA's cost analysis of the SPMD program),
  achieved_flops_per_s (all devices), mfu, memory, fused_attention.

  partner: None, or a no-argument function (another framework's step) run and
  timed after every JAX step, warm-up included: `partner_step_s_all`. Paired
  rounds see the same machine state, so their ratio holds still on a machine
  whose speed drifts by 10% over a minute (a shared 2-core VM does).
  """
  devices = list(devices or default_devices(config))
  mesh = sharding.make_mesh(config, devices)
  model = model_lib.build_model(config)
  tx = train_step_lib.make_optimizer(config)
  state = train_step_lib.create_train_state(config, model, tx, mesh)
  step = train_step_lib.make_train_step(config, model, tx, mesh)
  batch = train_step_lib.synthetic_batch(config, mesh)

  t0 = time.perf_counter()
  with jax.set_mesh(mesh):
    compiled = step.jitted.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  hlo = compiled.as_text() or ""

  def run_once():
    nonlocal state
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    return metrics

  t0 = time.perf_counter()
  metrics = run_once()
  first_s = time.perf_counter() - t0
  partner_first_s = _timed(partner) if partner else None
  for _ in range(warmup):
    run_once()
    if partner:
      partner()
  times, partner_times = [], []
  for _ in range(steps):
    t0 = time.perf_counter()
    metrics = run_once()
    times.append(time.perf_counter() - t0)
    if partner:
      partner_times.append(_timed(partner))
  step_s = float(np.median(times))

  tracks = config.batch_size
  views = 3 * tracks
  tokens = views * (len(config.model.class_tokens) + config.data.segment_frames)
  flops = _flops(compiled)
  peak = peak_flops(devices[0])
  achieved = flops * len(devices) / step_s if flops else None
  result = {
      "framework": "jax",
      "device_kind": devices[0].device_kind,
      "platform": devices[0].platform,
      "devices": len(devices),
      "activations": config.model.dtype,
      "tracks": tracks,
      "views_per_step": views,
      "tokens_per_view": len(config.model.class_tokens) + config.data.segment_frames,
      "compile_s": compile_s,
      "first_call_s": first_s,
      "step_s": step_s,
      "step_s_all": times,
      "views_per_s": views / step_s,
      "tokens_per_s": tokens / step_s,
      "flops_per_step": flops,
      "achieved_flops_per_s": achieved,
      "peak_flops_per_s": peak * len(devices) if peak else None,
      "mfu": achieved / (peak * len(devices)) if achieved and peak else None,
      "memory": _memory(compiled),
      # cuDNN's fused attention shows up as a custom call in the GPU program.
      "fused_attention": ("__cudnn$fmha" in hlo or "cudnn" in hlo.lower() and "fmha" in hlo.lower())
                         if devices[0].platform == "gpu" else None,
      "loss": float(metrics["loss"]),
  }
  if partner:
    result["partner_step_s_all"] = partner_times
    result["partner_first_call_s"] = partner_first_s
  stats = getattr(devices[0], "memory_stats", lambda: None)()
  if stats and "peak_bytes_in_use" in stats:
    result["memory"]["device_peak_bytes_in_use"] = int(stats["peak_bytes_in_use"])
  return result


def _timed(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def measure_jax_adaptive(variant, frames, tracks, dtype, num_tokens=2, devices=None, steps=3,
                         warmup=1, partner=None) -> dict:
  """measure_jax, halving the batch on out-of-memory (accelerators) down to 2 tracks/device."""
  n = len(devices) if devices else 1  # Out of memory happens on an accelerator: one device.
  requested = tracks
  while True:
    try:
      result = measure_jax(bench_config(variant, frames, tracks, dtype, num_tokens), devices, steps,
                           warmup, partner)
      break
    except Exception as e:  # noqa: BLE001
      if not _is_oom(e) or tracks // 2 < 2 * n:
        raise
      tracks //= 2
  result["tracks_requested"] = requested
  return result


def torch_reference_module():
  """benchmarks/torch_reference.py, or an ImportError's text if torch is missing."""
  try:
    # Here, not at the top: torch is an optional extra.
    import torch_reference  # pylint: disable=g-import-not-at-top
    return torch_reference
  except ImportError as e:
    return f"torch not installed ({e})"


def measure_torch(variant, frames, tracks, num_tokens=2, steps=3, warmup=1, compile_=True,
                  subprocess_=None, timeout_s: int = 1800, eager=True) -> dict:
  """The PyTorch reference at the same shape, or {'error': why} per mode.

  On accelerators it runs in a subprocess (`subprocess_` None: when JAX is not
  on a CPU), so that torch's and JAX's memory pools never share one device
  in one process; run_gpu.sh caps JAX's pool to leave torch room.
  """
  if subprocess_ is None:
    subprocess_ = not is_cpu(jax.devices()[0])
  if not subprocess_:
    module = torch_reference_module()
    if isinstance(module, str):
      return {"eager": {"error": module}, "compile": {"error": module}}
    return module.measure(variant, frames, tracks, token_names(num_tokens), steps=steps,
                          warmup=warmup, compile_=compile_, eager=eager)
  with tempfile.TemporaryDirectory(prefix="mt2_bench_") as tmp:
    out = pathlib.Path(tmp) / "torch.json"
    args = [sys.executable, str(ROOT / "benchmarks" / "torch_reference.py"), f"--variant={variant}",
            f"--frames={frames}", f"--tracks={tracks}", f"--tokens={num_tokens}", f"--steps={steps}",
            f"--warmup={warmup}", f"--out={out}"] + ([] if compile_ else ["--no-compile"])
    try:
      proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
      error = None if out.exists() else f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
    except subprocess.TimeoutExpired:
      error = f"timed out after {timeout_s} s"
    if error:
      return {"eager": {"error": error}, "compile": {"error": error}}
    return json.loads(out.read_text())


def pipeline_throughput(frames: int, quick: bool, timeout_s: int = 600) -> dict:
  """Views/s of benchmarks/input_pipeline.py at `frames`, run in a subprocess.

  A subprocess because Grain workers need their own absl flags and a clean
  start. Returns {views_per_s, workers, ...} of the fastest worker count, or
  {error}.
  """
  script = ROOT / "benchmarks" / "input_pipeline.py"
  if not script.exists():
    return {"error": "benchmarks/input_pipeline.py not found"}
  with tempfile.TemporaryDirectory(prefix="mt2_bench_") as tmp:
    out = pathlib.Path(tmp) / "pipeline.json"
    args = [sys.executable, str(script), f"--segment_frames={frames}", f"--out={out}", "--results_md=",
            "--dtypes=float32"]
    # Quick: no worker processes, whose start-up would be most of the run.
    args += ["--quick", "--workers=0"] if quick else ["--workers=0,2", "--batches=10", "--warmup=1"]
    try:
      proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
      return {"error": f"timed out after {timeout_s} s"}
    if proc.returncode != 0 or not out.exists():
      tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
      return {"error": f"exit {proc.returncode}: {' | '.join(tail)[:400]}"}
    report = json.loads(out.read_text())
  best = max(report["results"], key=lambda r: r["views_per_s"])
  return {"views_per_s": best["views_per_s"], "workers": best["workers"], "dtype": best["dtype"],
          "batch_size": report["settings"]["batch_size"], "segment_frames": frames,
          "command": report.get("command", "")}


def _torch_partner(variant, frames, tracks):
  """torch_reference.eager_runner at this shape, or why there is none (a string)."""
  module = torch_reference_module()
  if isinstance(module, str):
    return module
  try:
    return module.eager_runner(variant, frames, tracks)
  except Exception as e:  # noqa: BLE001 -- reported in the row, never raised.
    return f"{type(e).__name__}: {str(e)[:300]}"


def _partner_result(partner, jx: dict) -> dict:
  """The eager torch entry of a row from the rounds interleaved with JAX's."""
  if isinstance(partner, str):
    return {"error": partner}
  times = jx.pop("partner_step_s_all")
  first = jx.pop("partner_first_call_s")
  # Median over rounds of torch time / JAX time of the same round.
  paired = float(np.median(np.asarray(times) / np.asarray(jx["step_s_all"])))
  return {"step_s": float(np.median(times)), "step_s_all": times, "first_call_s": first,
          "interleaved_with_jax": True, "paired_ratio": paired}


def run(quick: bool = False, variants=None, frames=None, tracks=None, steps=None, warmup=None,
        torch_compile: bool = True, torch_: bool = True, pipeline: bool = True, command: str = "") -> dict:
  """Every (variant, frames) row: JAX step, torch eager/compile, ratios, pipeline headroom."""
  device = jax.devices()[0]
  variants = tuple(variants or (QUICK["variants"] if quick else VARIANTS))
  frames = tuple(frames or (QUICK["frames"] if quick else FRAMES))
  steps = steps or (QUICK["steps"] if quick else 3)
  warmup = (QUICK["warmup"] if quick else 1) if warmup is None else warmup
  dtype = default_dtype(device)
  pipelines = {f: pipeline_throughput(f, quick) if pipeline else {"error": "skipped (--no-pipeline)"}
               for f in frames}
  rows = []
  for variant in variants:
    for f in frames:
      n = tracks or (QUICK["tracks"] if quick else default_tracks(device, variant, f))
      # On a CPU the eager torch step runs in this process, interleaved with
      # JAX's round by round (measure_jax's `partner`).
      partner = _torch_partner(variant, f, n) if torch_ and is_cpu(device) else None
      jx = measure_jax_adaptive(variant, f, n, dtype, steps=steps, warmup=warmup,
                                partner=None if isinstance(partner, str) else partner)
      row = {"variant": variant, "frames": f, "tracks": jx["tracks"], "jax": jx}
      if torch_:
        # Same number of tracks as JAX ended up with, so the rows compare.
        # Quick mode skips torch.compile: its first call alone takes ~30 s.
        row["torch"] = measure_torch(variant, f, jx["tracks"], steps=steps, warmup=warmup,
                                     compile_=torch_compile and not quick, eager=partner is None)
        if quick and torch_compile:
          row["torch"]["compile"] = {"error": "skipped in --quick (compilation takes ~30 s)"}
        if partner is not None:
          row["torch"]["eager"] = _partner_result(partner, jx)
        for mode in ("eager", "compile"):
          t = row["torch"][mode]
          row[f"jax_over_torch_{mode}"] = t["step_s"] / jx["step_s"] if "step_s" in t else None
        if "paired_ratio" in row["torch"]["eager"]:
          row["jax_over_torch_eager"] = row["torch"]["eager"]["paired_ratio"]
      p = pipelines[f]
      row["pipeline_views_per_s"] = p.get("views_per_s")
      row["pipeline_over_step"] = p["views_per_s"] / jx["views_per_s"] if "views_per_s" in p else None
      rows.append(row)
      print(format_row(row), flush=True)
  return results.header({
      "benchmark": SECTION, "command": command, "quick": quick,
      "settings": {"variants": list(variants), "frames": list(frames), "steps": steps, "warmup": warmup,
                   "activations": dtype,
                   "batch_rule": ("fixed (--tracks)" if tracks else "quick: 2 tracks" if quick else
                                  "CPU: ~16 tracks x (173/T) x (192/d)^2, even, 2..16" if is_cpu(device)
                                  else "128 tracks, halved on out-of-memory")},
      "input_pipeline": {str(k): v for k, v in pipelines.items()},
      "rows": rows,
  }, jax.devices())


def _torch_s(row, mode):
  t = row.get("torch", {}).get(mode, {})
  return f"{t['step_s']:.3f}" if "step_s" in t else "n/a"


COLUMNS = ("variant", "T", "tracks", "devices", "JAX s/step", "views/s", "tokens/s", "FLOP/s", "MFU",
           "mem", "torch eager s", "torch compile s", "JAX/eager", "JAX/compile", "pipeline/step")


def format_row(row) -> str:
  jx = row["jax"]
  cells = (row["variant"], row["frames"], row["tracks"], jx["devices"], f"{jx['step_s']:.3f}",
           f"{jx['views_per_s']:.1f}", results.eng(jx["tokens_per_s"]),
           results.eng(jx["achieved_flops_per_s"]),
           results.fmt(jx["mfu"] and 100 * jx["mfu"], ".1f") + ("%" if jx["mfu"] else ""),
           results.eng(jx["memory"].get("peak_estimate_bytes"), "B"),
           _torch_s(row, "eager"), _torch_s(row, "compile"),
           results.fmt(row.get("jax_over_torch_eager")), results.fmt(row.get("jax_over_torch_compile")),
           results.fmt(row.get("pipeline_over_step"), ".1f"))
  return results.table_row(cells)


def table(rows) -> str:
  lines = results.table_header(COLUMNS, left=1)
  return "\n".join(lines + [format_row(r) for r in rows])


def _errors(rows) -> list[str]:
  notes = []
  for r in rows:
    for mode in ("eager", "compile"):
      err = r.get("torch", {}).get(mode, {}).get("error")
      if err:
        notes.append(f"torch {mode} at {r['variant']}/{r['frames']}: {err}")
  return sorted(set(notes))


def markdown(report: dict) -> str:
  s = report["settings"]
  lines = results.preamble(report, "Train step: JAX vs PyTorch (`benchmarks/train_step.py`)")
  lines += [
      "One accelerator, or the whole CPU as `mt2 train` uses it: one XLA device per core "
      "(`host.use_cpu_cores`), data parallel over the batch (devices column). "
      f"Activations {s['activations']} (params float32), batch: {s['batch_rule']}; "
      f"median of {s['steps']} steps after {s['warmup']} warm-up. A track is 3 views of K + T tokens "
      "(K = 2). FLOP/s from XLA's cost analysis of the compiled step; MFU against the dense bf16 peak "
      "(blank where unknown). mem: the compiled step's memory analysis (arguments + outputs - donated "
      "+ temporaries). JAX/eager, JAX/compile: torch s/step / JAX s/step (> 1: JAX faster); on a "
      "CPU the eager torch step alternates with JAX's in one process and JAX/eager is the median "
      "over those rounds of the per-round ratio. "
      "pipeline/step: input-pipeline views/s / views/s the step consumes.", "",
      table(report["rows"]),
  ]
  notes = _errors(report["rows"])
  for f, p in report.get("input_pipeline", {}).items():
    if "error" in p:
      notes.append(f"input pipeline at T={f}: {p['error']}")
    else:
      notes.append(f"input pipeline at T={f}: {p['views_per_s']:.0f} views/s "
                   f"({p['workers']} workers, batch {p['batch_size']}, {p['dtype']})")
  if notes:
    lines += [""] + [f"- {n}" for n in notes]
  return "\n".join(lines)


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  host.use_cpu_cores()  # Before JAX starts: the CPU as mt2 train uses it.
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="smallest size, seconds")
  parser.add_argument("--variants", default="", help="comma-separated, default tiny,small,base")
  parser.add_argument("--frames", default="", help="comma-separated, default 173,646")
  parser.add_argument("--tracks", type=int, default=0, help="tracks per step (default: by device)")
  parser.add_argument("--steps", type=int, default=0)
  parser.add_argument("--no-torch", dest="torch", action="store_false")
  parser.add_argument("--no-torch_compile", dest="torch_compile", action="store_false")
  parser.add_argument("--no-pipeline", dest="pipeline", action="store_false")
  parser.add_argument("--out", default="", help="JSON file")
  parser.add_argument("--results_md", default=results.DEFAULT_PATH, help="'' to skip")
  args = parser.parse_args(argv)
  split = lambda s, f=str: tuple(f(x) for x in s.split(",") if x)
  print(results.table_row(COLUMNS))
  report = run(args.quick, split(args.variants), split(args.frames, int), args.tracks or None,
               args.steps or None, torch_compile=args.torch_compile, torch_=args.torch,
               pipeline=args.pipeline, command=results.command_line("benchmarks/train_step.py", argv))
  results.write(report, args.out, args.results_md, SECTION, markdown)


if __name__ == "__main__":
  main()
