"""`mt2 bench`: its plumbing on stub scripts, then one real `--quick` run; no timing is asserted."""

import json
import os
import pathlib
import subprocess
import sys

from absl import app
from absl.testing import flagsaver
import pytest

from mt2_jax.cli import bench

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The benchmarks are scripts that import their siblings by plain name.
sys.path.insert(0, str(ROOT / "benchmarks"))

import results  # noqa: E402  (benchmarks/results.py)
import train_step as bench_lib  # noqa: E402  (benchmarks/train_step.py)

JAX_FIELDS = ("step_s", "step_s_all", "compile_s", "views_per_s", "tokens_per_s", "flops_per_step",
              "achieved_flops_per_s", "mfu", "memory", "tracks", "device_kind", "activations")
HEADER_FIELDS = ("date", "machine", "device_kind", "versions", "xla_flags", "load_average_before", "command",
                 "settings", "rows")

# A stand-in for every benchmark script: records its arguments in the JSON it
# writes to --out, and fails with status 3 when its name is in $STUB_FAIL.
STUB = """
import json, os, pathlib, sys
name = pathlib.Path(__file__).stem
print(f"stub {name} running", flush=True)
if name in os.environ.get("STUB_FAIL", "").split(","):
  sys.exit(3)
out = next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--out="))
pathlib.Path(out).write_text(json.dumps({"benchmark": name, "argv": sys.argv[1:], "cwd": os.getcwd()}))
"""


@pytest.fixture
def stubs(tmp_path):
  """A checkout whose benchmarks/ holds stub scripts."""
  (tmp_path / "benchmarks").mkdir()
  for name in bench.BENCHMARKS:
    (tmp_path / "benchmarks" / f"{name}.py").write_text(STUB)
  return tmp_path


def test_flags_reach_each_script(stubs, capfd):
  reports = bench.run(quick=True, torch_=False, pipeline=False, results_md="R.md", root=stubs)
  assert list(reports) == list(bench.BENCHMARKS)
  for name, report in reports.items():
    assert report["benchmark"] == name and report["wall_s"] >= 0
    assert "--quick" in report["argv"] and "--results_md=R.md" in report["argv"]
    assert pathlib.Path(report["cwd"]).resolve() == stubs.resolve()  # Relative paths: the checkout's.
  # Only train_step has a torch side and an input pipeline.
  assert {"--no-torch", "--no-pipeline"} <= set(reports["train_step"]["argv"])
  assert "--no-torch_compile" not in reports["train_step"]["argv"]
  assert not any(a.startswith("--no-") for a in reports["scaling"]["argv"])
  # The scripts' output reaches mt2 bench's, under a line naming each.
  out = capfd.readouterr().out
  assert out.index("== train_step ==") < out.index("stub train_step running") < out.index("== class_tokens ==")


def test_failure_is_reported_and_the_rest_runs(stubs, monkeypatch, tmp_path):
  monkeypatch.setenv("STUB_FAIL", "class_tokens")
  monkeypatch.setattr(bench, "ROOT", stubs)
  out = tmp_path / "out" / "bench.json"
  with flagsaver.flagsaver(out=str(out), quick=True, only=["class_tokens", "scaling"], results_md="",
                           torch=True, torch_compile=False, pipeline=True):
    with pytest.raises(SystemExit) as exit_:
      bench.main(["mt2 bench"])
  assert exit_.value.code == 1
  report = json.loads(out.read_text())
  assert report["command"] == "mt2 bench --quick --only=class_tokens,scaling --notorch_compile"
  assert "train_step" not in report
  assert report["class_tokens"]["error"] == "class_tokens.py exited with status 3"
  assert report["scaling"]["benchmark"] == "scaling"


def test_usage_errors(tmp_path):
  with pytest.raises(app.UsageError, match="unknown"):
    bench.run(only=["train_step", "nope"])
  # An installed wheel has no benchmarks/: the error says what to do.
  with pytest.raises(app.UsageError, match=r"source checkout.*pip install -e \."):
    bench.run(root=tmp_path)


def test_formatting():
  assert results.fmt(None) == "-" and results.fmt(0.5) == "0.50" and results.fmt(2, ".1f") == "2.0"
  assert results.eng(None) == "-" and results.eng(12) == "12" and results.eng(3_450, "") == "3.45 k"
  assert results.eng(1.5e9, "B") == "1.50 GB" and results.eng(2e12, "FLOP/s") == "2.00 TFLOP/s"
  assert results.table_header(("a", "b"), left=1) == ["| a | b |", "|:--|--:|"]


def test_peak_table():
  class Dev:
    def __init__(self, kind):
      self.device_kind = kind
  assert bench_lib.peak_flops(Dev("NVIDIA H100 80GB HBM3")) == 989e12
  assert bench_lib.peak_flops(Dev("NVIDIA H100 PCIe")) == 756e12
  assert bench_lib.peak_flops(Dev("NVIDIA A100-SXM4-40GB")) == 312e12
  assert bench_lib.peak_flops(Dev("TPU v5 lite")) == 197e12
  assert bench_lib.peak_flops(Dev("TPU v5p")) == 459e12
  assert bench_lib.peak_flops(Dev("TPU v6 lite")) == 918e12
  assert bench_lib.peak_flops(Dev("cpu")) is None


def test_default_sizes():
  class Cpu:
    platform, device_kind = "cpu", "cpu"

  class Gpu:
    platform, device_kind = "gpu", "NVIDIA H100 80GB HBM3"
  assert bench_lib.default_tracks(Cpu(), "tiny", 173) == 16
  assert 2 <= bench_lib.default_tracks(Cpu(), "base", 646) <= 4
  assert bench_lib.default_tracks(Gpu(), "base", 646) == 128
  assert bench_lib.default_dtype(Cpu()) == "float32"
  assert bench_lib.default_dtype(Gpu()) == "bfloat16"


def test_class_token_configs():
  """The K the quick run does not compile (1, and above 3) still make valid configs."""
  assert bench_lib.token_names(8)[-2:] == ("equivariant3", "contrastive3")
  one = bench_lib.bench_config("test", 32, 2, num_tokens=1)
  assert tuple(one.model.class_tokens) == ("equivariant",)
  assert {name: l.kind for name, l in one.losses.items()} == {"cpsd": "cpsd"}
  config = bench_lib.bench_config("test", 32, 2, num_tokens=3)
  assert tuple(config.model.class_tokens) == ("equivariant", "contrastive", "equivariant1")
  assert {l.kind for l in config.losses.values()} == {"cpsd", "ntxent"} and len(config.losses) == 3
  assert config.losses["cpsd1"].token == "equivariant1"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  """`mt2 bench --quick --out FILE`, run once for every test below: (JSON, RESULTS.md, stdout)."""
  tmp = tmp_path_factory.mktemp("bench")
  out, md = tmp / "bench.json", tmp / "RESULTS.md"
  # Compiling is most of the run, and no timing is asserted, so: a compilation
  # cache shared by the benchmarks' processes compiles the program they have in
  # common once (train_step's row is class_tokens' K = 2 and scaling's one
  # device), and XLA:CPU skips its slow LLVM passes (same programs, slower
  # code; half the compile time).
  xla_flags = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
               " --xla_llvm_disable_expensive_passes=true").strip()
  env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_COMPILATION_CACHE_DIR=str(tmp / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  proc = subprocess.run([sys.executable, "-m", "mt2_jax.cli", "bench", "--quick", f"--out={out}",
                         f"--results_md={md}"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=1200)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return json.loads(out.read_text()), md.read_text(), proc.stdout


def _check_jax(jx):
  for field in JAX_FIELDS:
    assert field in jx, field
  assert jx["step_s"] > 0 and jx["views_per_s"] > 0
  assert jx["flops_per_step"] > 0
  assert jx["memory"]["peak_estimate_bytes"] > 0
  assert jx["views_per_step"] == 3 * jx["tracks"]
  assert len(jx["step_s_all"]) == 2  # --quick: 2 timed steps.


def test_train_step(report):
  rep = report[0]["train_step"]
  for field in HEADER_FIELDS:
    assert field in rep, field
  assert "jax" in rep["versions"] and "flax" in rep["versions"]
  assert rep["command"] == "python benchmarks/train_step.py --quick"
  (row,) = rep["rows"]
  assert (row["variant"], row["frames"]) == ("test", 32)
  _check_jax(row["jax"])
  # CPUs have no peak in the table, hence no MFU.
  assert row["jax"]["mfu"] is None and row["jax"]["peak_flops_per_s"] is None
  torch_ = row["torch"]
  for mode in ("eager", "compile"):
    assert "step_s" in torch_[mode] or "error" in torch_[mode], mode
  if "step_s" in torch_["eager"]:
    assert row["jax_over_torch_eager"] > 0
  # The input pipeline ran (benchmarks/input_pipeline.py, a process of its own).
  pipeline = rep["input_pipeline"]["32"]
  assert pipeline["views_per_s"] > 0 and pipeline["segment_frames"] == 32, pipeline
  assert row["pipeline_over_step"] > 0


def test_class_tokens(report):
  rep = report[0]["class_tokens"]
  assert [r["num_tokens"] for r in rep["rows"]] == [2, 3]
  for r in rep["rows"]:
    _check_jax(r["jax"])
    assert len(r["class_tokens"]) == r["num_tokens"]
    assert r["jax"]["tokens_per_view"] == r["num_tokens"] + 32
  assert rep["rows"][0]["step_s_over_k2"] == 1.0
  # One more token and loss, more work.
  assert rep["rows"][1]["flops_over_k2"] > 1


def test_scaling(report):
  rep = report[0]["scaling"]
  rows = rep["rows"]
  assert [r["devices"] for r in rows] == [1, 2]
  for r in rows:
    _check_jax(r["jax"])
    assert r["jax"]["devices"] == r["devices"]
    assert r["jax"]["tracks"] == 2 * r["devices"]  # Fixed per-device batch.
    assert r["efficiency"] > 0
  assert rows[0]["efficiency"] == 1.0
  assert "fake" in rep["settings"]["devices_kind"]
  assert "xla_force_host_platform_device_count=8" in rep["xla_flags"]


def test_combined_report_and_markdown(report):
  combined, md, stdout = report
  assert combined["quick"] is True and combined["command"] == "mt2 bench --quick"
  assert all(combined[name]["wall_s"] > 0 for name in bench.BENCHMARKS)
  for name in bench.BENCHMARKS:
    assert f"<!-- bench_{name}:start -->" in md and f"<!-- bench_{name}:end -->" in md
    assert f"`python benchmarks/{name}.py --quick`" in md  # Each section says how to redo it.
    # Each script's table streamed through mt2 bench's stdout.
    assert f"== {name} ==" in stdout
  assert "| test | 32 | 2 |" in stdout
