"""`mt2 info`, the config files, the `:ARGS` mini-language and config validation."""

import json
import pathlib
import re
import subprocess
import sys

import pytest

from mt2_jax import config_defaults
from mt2_jax import config_validation
from mt2_jax import info
from mt2_jax import model as model_lib

from conftest import load_repo_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ("mt2", "contrastive_only", "equivariant_only", "mt2_k3")


def _load(name):
  return load_repo_file(f"configs/{name}.py")


def test_mt2_info_prints_json_on_its_last_line():
  mt2 = pathlib.Path(sys.executable).parent / "mt2"
  command = [str(mt2)] if mt2.exists() else [sys.executable, "-m", "mt2_jax.cli"]
  result = subprocess.run(command + ["info", "--config=configs/mt2.py:runlocal"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  # Quiet by default (mt2_jax/cli): JAX's backend probing logs at INFO here.
  assert not re.search(r"^I\d{4} ", result.stderr, re.M), result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  assert "parameters" in result.stdout and len(lines) > 5
  data = json.loads(lines[-1])
  # test variant, 128 frames, K=2: the paper's 24 032, with a hybrid patch embedding
  # (Linear(84 -> 20) + 12 pitch classes x 1 channel: -1 020 + 2), LayerScale (+2 x 2 x 32)
  # and one class-attention block per class token (2 x 8 544, a plain block's parameters).
  assert data["params_backbone"] == 24_032 - 1_020 + 2 + 128 + 2 * 8_544
  assert data["params"] == data["params_backbone"] + sum(data["params_heads"].values())
  assert data["num_tokens"] == 2 + 128 and data["num_frames"] == 128
  assert data["flops_source"] == "xla_cost_analysis"
  fwd, step = data["flops_forward_per_view"], data["flops_train_step_per_track"]
  # The compiled count agrees with the analytic one, and a training step (3
  # views, forward + backward ~ 3x forward) costs roughly 9 forward passes.
  assert 0.8 < fwd / data["flops_forward_per_view_analytic"] < 1.3
  assert 6 < step / fwd < 12
  assert data["outputs"]["tokens"] == ["B", 128, 32]
  assert {"cls_equivariant", "cls_contrastive", "cls_mean", "tokens_mean", "head_cpsd",
          "head_ntxent"} <= set(data["outputs"])


@pytest.mark.parametrize("command, expected", [
    ("train", ("--config", "--workdir", "--coordinator_address")),
    ("demo", ("--out", "--preset")),
    ("embed", ("--workdir", "--audio", "--out", "--block_windows")),
    ("corpus", ("--out", "--num_pieces", "--soundfont", "--programs", "--room")),
    ("prepare", ("--audio", "--out", "--shard_index", "--hop_length")),
])
def test_subcommand_help_lists_its_own_flags(command, expected):
  mt2 = pathlib.Path(sys.executable).parent / "mt2"
  base = [str(mt2)] if mt2.exists() else [sys.executable, "-m", "mt2_jax.cli"]
  result = subprocess.run(base + [command, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.startswith(f"usage: mt2 {command}")
  for flag in expected:
    assert f"  {flag}" in result.stdout or f"  --[no]{flag[2:]}" in result.stdout, (flag, result.stdout)


def test_summarize_k3_without_compiling():
  config = _load("mt2_k3").get_config("runlocal,paper")  # Counts pinned on the paper's architecture.
  data = info.summarize(config, compiled_flops=False)
  assert data["flops_source"] == "analytic"
  assert data["class_tokens"] == ["equivariant", "contrastive", "semitone"]
  assert data["num_tokens"] == 3 + 128
  assert data["params_backbone"] == 24_032 + 32  # One more class vector.
  assert data["outputs"]["head_cpsd_semitone"] == ["B", 12]
  assert "semitone" in info.format_summary(data)


def test_analytic_flops_of_tiny():
  # One 646-frame view through tiny: ~10.8 GFLOPs (2 x multiply-adds).
  flops = info.analytic_forward_flops(192, 12, 768, 84, 646, 2)
  assert flops == 10_770_379_776


@pytest.mark.parametrize("name", CONFIGS)
def test_config_files(name):
  module = _load(name)
  assert module.__doc__.lstrip().startswith("mt2 train --config=configs/")
  for arg in (None, "runlocal"):
    config = module.get_config(arg)
    config_validation.validate(config)
    for loss in config.losses.values():
      assert loss.token in config.model.class_tokens
  local = module.get_config("runlocal")
  assert local.model.variant == "test" and local.batch_size == 8 and local.total_steps <= 100
  assert 64 <= local.data.segment_frames <= 128
  assert module.get_config(None).model.variant == "tiny"


def test_config_files_pick_their_tokens_and_losses():
  tokens = {name: tuple(_load(name).get_config().model.class_tokens) for name in CONFIGS}
  assert tokens == {
      "mt2": ("equivariant", "contrastive"),
      "contrastive_only": ("contrastive",),
      "equivariant_only": ("equivariant",),
      "mt2_k3": ("equivariant", "contrastive", "semitone"),
  }
  k3 = _load("mt2_k3").get_config()
  assert k3.losses.cpsd.omega == pytest.approx(7 / 12)
  assert k3.losses.cpsd_semitone.omega == pytest.approx(1 / 12)


def test_arg_presets_and_overrides():
  config = _load("mt2").get_config("variant=small,runlocal,model.dropout=0.1,batch_size=16")
  assert config.model.variant == "small"  # Overrides win over presets, whatever the order.
  assert config.data.segment_frames == 128 and config.model.dropout == 0.1 and config.batch_size == 16
  assert config_defaults.apply_arg(config_defaults.base_config(), "lr=1").optim.lr == 1.0
  with pytest.raises(ValueError, match="unknown key"):
    config_defaults.apply_arg(config_defaults.base_config(), "model.widht=8")
  with pytest.raises(ValueError, match="unknown preset"):
    config_defaults.apply_arg(config_defaults.base_config(), "runfast")


def test_command_line_overrides_reach_the_model():
  from absl import flags
  from ml_collections import config_flags
  argv = ["mt2", f"--config={ROOT / 'configs' / 'mt2.py'}:runlocal,paper", "--config.model.depth=1",
          "--config.model.num_heads=4", "--config.losses.ntxent.temperature=0.2"]
  values = flags.FlagValues()
  # config_flags reads the override flags from sys.argv unless told otherwise.
  config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=argv)
  values(argv)
  config = values.config
  config_validation.validate(config)
  assert model_lib.model_dims(config) == dict(width=32, depth=1, num_heads=4, mlp_dim=64)
  data = info.summarize(config, compiled_flops=False)
  assert data["depth"] == 1 and data["params_breakdown"]["blocks"] == 17_088 // 2
  config.model.num_heads = 5
  with pytest.raises(ValueError, match="config.model.num_heads:"):
    config_validation.validate(config)


def _mutate(path, value):
  def apply(config):
    *parents, leaf = path.split(".")
    node = config
    for name in parents:
      node = node[name]
    if value is _DELETE:
      del node[leaf]
    else:
      node[leaf] = value
  return apply


_DELETE = object()


@pytest.mark.parametrize("path, value, key", [
    ("model.variant", "huge", "model.variant"),
    ("losses.ntxent.token", "rhythm", "losses.ntxent.token"),
    ("losses.cpsd.kind", "byol", "losses.cpsd.kind"),
    ("data.crop_bins", 90, "data.crop_bins"),
    ("batch_size", 0, "batch_size"),
    ("data.segment_frames", -1, "data.segment_frames"),
    ("keep_checkpoints", 0, "keep_checkpoints"),
    ("cqt.fmin", -1.0, "cqt.fmin"),
    ("model.class_tokens", ("equivariant", "equivariant"), "model.class_tokens"),
    ("model.class_tokens", ("mean",), "model.class_tokens"),
    ("model.dtype", "int8", "model.dtype"),
    ("model.dropout", 1.0, "model.dropout"),
    ("model.attention", "flash", "model.attention"),
    ("model.attention", "cudnn", "model.attention"),  # Tests run on CPU.
    ("losses.ntxent.temperature", 0.0, "losses.ntxent.temperature"),
    ("losses.ntxent.projector", "transformer", "losses.ntxent.projector"),
    ("losses.ntxent.pairs", "ab", "losses.ntxent.pairs"),
    ("losses.cpsd.omega", 0.0, "losses.cpsd.omega"),
    ("data.max_offset", 6, "data.max_offset"),
    ("data.colour_db", -3.0, "data.colour_db"),
    ("data.group_pattern", "(unclosed", "data.group_pattern"),
    ("optim.warmup_steps", 100_000, "optim.warmup_steps"),
    ("optim.end_lr", 1.0, "optim.end_lr"),
    ("sharding", "tensor", "sharding"),
    ("mesh.fsdp", 0, "mesh.fsdp"),
    ("losses", {}, "losses"),
])
def test_validation_names_the_offending_key(path, value, key):
  config = config_defaults.base_config()
  config_validation.validate(config)
  _mutate(path, value)(config)
  with pytest.raises(ValueError, match=f"config.{key}:"):
    config_validation.validate(config)


def test_validation_checks_fsdp_divisibility_and_is_extensible():
  config = config_defaults.base_config()
  config.sharding = "fsdp"
  config.mesh.fsdp = 5  # 192 is not divisible by 5.
  with pytest.raises(ValueError, match="config.mesh.fsdp:"):
    config_validation.validate(config)
  config.mesh.fsdp = 8
  config_validation.validate(config)

  def needs_data_dir(config):
    if not config.data_dir:
      raise ValueError("config.data_dir: empty")

  with pytest.raises(ValueError, match="config.data_dir:"):
    config_validation.validate(config, extra_checks=[needs_data_dir])
  assert needs_data_dir not in config_validation.CHECKS


def test_variants_table_matches_the_design():
  assert model_lib.VARIANTS["tiny"] == dict(width=192, depth=12, num_heads=3, mlp_dim=768)
  assert model_lib.VARIANTS["small"] == dict(width=384, depth=12, num_heads=6, mlp_dim=1536)
  assert model_lib.VARIANTS["base"] == dict(width=768, depth=12, num_heads=12, mlp_dim=3072)
