"""Every benchmark at its smallest size (`--quick`): the JSON has its fields; no timing is asserted."""

import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import train_step as bench_lib  # noqa: E402
from mt2_jax import bench  # noqa: E402

JAX_FIELDS = ("step_s", "step_s_all", "compile_s", "views_per_s", "tokens_per_s", "flops_per_step",
              "achieved_flops_per_s", "mfu", "memory", "tracks", "device_kind", "activations")
HEADER_FIELDS = ("date", "machine", "device_kind", "versions", "xla_flags", "load_average_before", "command",
                 "settings", "rows")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  """`mt2 bench --quick --out FILE`, run once for every test in this file."""
  out = tmp_path_factory.mktemp("bench") / "bench.json"
  md = out.parent / "RESULTS.md"
  argv = ["mt2 bench", "--quick", f"--out={out}", f"--results_md={md}"]
  bench.FLAGS.unparse_flags()
  bench.FLAGS(argv)
  try:
    bench.main(argv[:1])
  finally:
    bench.FLAGS.unparse_flags()
    bench.FLAGS.mark_as_parsed()
  return json.loads(out.read_text()), md.read_text()


def _check_jax(jx):
  for field in JAX_FIELDS:
    assert field in jx, field
  assert jx["step_s"] > 0 and jx["views_per_s"] > 0
  assert jx["flops_per_step"] > 0
  assert jx["memory"]["peak_estimate_bytes"] > 0
  assert jx["views_per_step"] == 3 * jx["tracks"]


def test_train_step(report):
  rep = report[0]["train_step"]
  for field in HEADER_FIELDS:
    assert field in rep, field
  assert "jax" in rep["versions"] and "flax" in rep["versions"]
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
  # The input pipeline ran, or says why not.
  pipeline = rep["input_pipeline"]["32"]
  assert "views_per_s" in pipeline or "error" in pipeline
  if "views_per_s" in pipeline:
    assert row["pipeline_over_step"] > 0


def test_class_tokens(report):
  rep = report[0]["class_tokens"]
  assert [r["num_tokens"] for r in rep["rows"]] == [1, 2, 3, 4, 8]
  for r in rep["rows"]:
    _check_jax(r["jax"])
    assert len(r["class_tokens"]) == r["num_tokens"]
    assert r["jax"]["tokens_per_view"] == r["num_tokens"] + 32
  k2 = rep["rows"][1]
  assert k2["step_s_over_k2"] == 1.0
  # More tokens, more work.
  assert rep["rows"][-1]["jax"]["flops_per_step"] > rep["rows"][0]["jax"]["flops_per_step"]


def test_scaling(report):
  rep = report[0]["scaling"]
  rows = rep["rows"]
  assert [r["devices"] for r in rows] == [1, 2, 4, 8]
  for r in rows:
    _check_jax(r["jax"])
    assert r["jax"]["devices"] == r["devices"]
    assert r["jax"]["tracks"] == 2 * r["devices"]  # Fixed per-device batch.
    assert r["efficiency"] > 0
  assert "fake" in rep["settings"]["devices_kind"]
  assert "xla_force_host_platform_device_count=8" in rep["xla_flags"]


def test_results_markdown(report):
  md = report[1]
  for name in ("bench_train_step", "bench_class_tokens", "bench_scaling"):
    assert f"<!-- {name}:start -->" in md and f"<!-- {name}:end -->" in md
  assert "mt2 bench --quick" in md


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
  config = bench_lib.bench_config("test", 32, 2, num_tokens=3)
  assert tuple(config.model.class_tokens) == ("equivariant", "contrastive", "equivariant1")
  assert {l.kind for l in config.losses.values()} == {"cpsd", "ntxent"} and len(config.losses) == 3
