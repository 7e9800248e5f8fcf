"""Checks a config before anything expensive starts; errors name the bad key.

`validate(config)` runs every registered check. A check is a function
`check(config) -> None` that raises `ValueError("config.<key>: why")`;
register more with `@register` (e.g. dataset or device checks that need the
data directory or `jax.devices()`), or pass them as `extra_checks`.
"""

import math
import re
from typing import Callable, Iterable

import jax

from mt2_jax import losses
from mt2_jax import model as model_lib

Check = Callable[[object], None]
CHECKS: list[Check] = []

DTYPES = ("bfloat16", "float16", "float32")
SHARDINGS = ("data", "fsdp")
CLASS_TOKEN_ATTENTION = ("full", "isolated")


def register(check: Check) -> Check:
  """Decorator: adds `check` to the checks `validate` runs."""
  CHECKS.append(check)
  return check


def validate(config, extra_checks: Iterable[Check] = ()) -> None:
  """Raises ValueError naming the offending key if `config` is not runnable."""
  for check in [*CHECKS, *extra_checks]:
    check(config)


def _fail(key: str, message: str):
  raise ValueError(f"config.{key}: {message}")


def _get(config, key: str):
  node = config
  for name in key.split("."):
    if name not in node:
      _fail(key, "missing")
    node = node[name]
  return node


def _positive_int(config, key: str) -> int:
  value = _get(config, key)
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    _fail(key, f"must be a positive integer, got {value!r}")
  return value


def _number(config, key: str, low=None, high=None, low_open=False, high_open=False) -> float:
  value = _get(config, key)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    _fail(key, f"must be a finite number, got {value!r}")
  if low is not None and (value < low or (low_open and value == low)):
    _fail(key, f"must be {'>' if low_open else '>='} {low}, got {value!r}")
  if high is not None and (value > high or (high_open and value == high)):
    _fail(key, f"must be {'<' if high_open else '<='} {high}, got {value!r}")
  return value


@register
def check_sizes(config) -> None:
  for key in ("total_steps", "batch_size", "checkpoint_every", "log_every", "keep_checkpoints",
              "cqt.sample_rate", "cqt.n_bins", "cqt.bins_per_octave", "cqt.hop_length",
              "data.segment_frames", "data.crop_bins", "data.max_offset"):
    _positive_int(config, key)
  _number(config, "cqt.fmin", low=0, low_open=True)
  if "colour_db" in config.data:  # Optional: runs saved before it existed lack it.
    _number(config, "data.colour_db", low=0)
  if "group_pattern" in config.data:  # Optional, as colour_db.
    pattern = config.data.group_pattern
    try:
      re.compile(pattern)
    except (TypeError, re.error) as e:
      _fail("data.group_pattern", f"must be a regular expression on track ids or '' (off), "
            f"got {pattern!r} ({e})")
  for key in ("data.num_workers", "data.prefetch_buffer_size"):
    value = _get(config, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      _fail(key, f"must be an integer >= 0, got {value!r}")


@register
def check_crop(config) -> None:
  from mt2_jax.data import augment  # The one home of the crop arithmetic (ViewSpec.check).
  if config.data.get("b_offset", "shared") not in augment.B_OFFSETS:  # Older runs lack it.
    _fail("data.b_offset", f"must be one of {augment.B_OFFSETS}, got {config.data.b_offset!r}")
  try:
    augment.ViewSpec.from_config(config.data).check(config.cqt.n_bins)
  except ValueError as e:
    _fail("data.crop_bins", str(e))


@register
def check_model(config) -> None:
  model = config.model
  if model.variant not in model_lib.VARIANTS:
    _fail("model.variant", f"unknown {model.variant!r}; known: {sorted(model_lib.VARIANTS)}")
  for key in ("width", "depth", "num_heads", "mlp_dim"):
    if model.get(key) is not None:
      _positive_int(config, f"model.{key}")
  dims = model_lib.model_dims(config)
  if dims["width"] % dims["num_heads"]:
    _fail("model.num_heads", f"width {dims['width']} is not divisible by num_heads {dims['num_heads']}")
  if model.dtype not in DTYPES:
    _fail("model.dtype", f"unknown {model.dtype!r}; known: {DTYPES}")
  _number(config, "model.dropout", low=0, high=1, high_open=True)
  if model.get("class_token_attention", "full") not in CLASS_TOKEN_ATTENTION:
    _fail("model.class_token_attention",
          f"unknown {model.class_token_attention!r}; known: {CLASS_TOKEN_ATTENTION}")
  if model.get("class_blocks", 0):
    _positive_int(config, "model.class_blocks")
    if model.get("class_token_attention", "full") != "full":
      _fail("model.class_token_attention", "with model.class_blocks the blocks see the frames "
            "only, so there is no class-token attention to restrict; leave it 'full'")
  detached = tuple(model.get("detached_tokens", ()))
  if detached:
    if not model.get("class_blocks", 0):
      _fail("model.detached_tokens", "a token reads the frames apart from the blocks only with "
            "model.class_blocks > 0")
    unknown = sorted(set(detached) - set(model.class_tokens))
    if unknown:
      _fail("model.detached_tokens", f"{unknown} are not class tokens {tuple(model.class_tokens)}")
  attention = model.get("attention", "auto")
  if attention not in model_lib.ATTENTION_IMPLEMENTATIONS:
    _fail("model.attention", f"unknown {attention!r}; known: {model_lib.ATTENTION_IMPLEMENTATIONS}")
  if attention == "cudnn" and (model.dtype not in ("bfloat16", "float16")
                               or jax.default_backend() != "gpu"):
    _fail("model.attention", f"'cudnn' needs a GPU and model.dtype bfloat16 or float16 (have "
          f"{jax.default_backend()}, {model.dtype}); use 'auto'")
  patch_embed = model.get("patch_embed", "dense")
  if patch_embed not in model_lib.PATCH_EMBEDS:
    _fail("model.patch_embed", f"unknown {patch_embed!r}; known: {model_lib.PATCH_EMBEDS}")
  if model.get("pitch_channels") is not None:
    _positive_int(config, "model.pitch_channels")
  pitch_c = model_lib.pitch_embed_channels(patch_embed, dims["width"], model.get("pitch_channels"))
  if pitch_c and config.data.crop_bins % 12:
    _fail("model.patch_embed", f"{patch_embed!r} folds octaves of 12 bins; data.crop_bins "
          f"{config.data.crop_bins} is not a multiple of 12")
  if pitch_c < 1 and patch_embed != "dense":
    _fail("model.width", f"{dims['width']} is too narrow for patch_embed {patch_embed!r} "
          "(needs 12 channels per pitch-class channel)")
  if patch_embed == "pitch" and 12 * pitch_c != dims["width"]:
    _fail("model.pitch_channels", f"'pitch' needs 12 x pitch_channels == width ({dims['width']}), "
          f"got 12 x {pitch_c}")
  if 12 * pitch_c > dims["width"]:
    _fail("model.pitch_channels", f"12 x {pitch_c} exceeds the width {dims['width']}")
  reads = model.get("token_reads", "all")
  if reads not in model_lib.TOKEN_READS:
    _fail("model.token_reads", f"unknown {reads!r}; known: {model_lib.TOKEN_READS}")
  if reads != "all" and (not model.get("class_blocks", 0) or patch_embed != "hybrid"
                         or 12 * pitch_c == dims["width"]):
    _fail("model.token_reads", f"{reads!r} gives each class token's class blocks one part of "
          "the frame token: it needs model.class_blocks > 0 and model.patch_embed 'hybrid' with "
          "dense channels left (12 x pitch_channels < width); 'all' reads the whole token")
  _number(config, "model.layerscale", low=0)
  for key, default, known in (("class_token_init", "mean", model_lib.CLASS_TOKEN_INITS),
                              ("layerscale_tokens", "all", model_lib.LAYERSCALE_TOKENS)):
    if model.get(key, default) not in known:
      _fail(f"model.{key}", f"unknown {model[key]!r}; known: {known}")
  tokens = model.class_tokens
  if isinstance(tokens, str) or not tokens:
    _fail("model.class_tokens", f"must be a non-empty tuple of names, got {tokens!r}")
  for name in tokens:
    # Names become output keys `cls_<name>`; 'mean' would clash with cls_mean.
    if not isinstance(name, str) or not name.isidentifier() or name == "mean":
      _fail("model.class_tokens", f"{name!r} is not a valid token name (an identifier, not 'mean')")
  if len(set(tokens)) != len(tokens):
    _fail("model.class_tokens", f"names must be unique, got {tuple(tokens)}")


@register
def check_losses(config) -> None:
  if not config.losses:
    _fail("losses", "at least one loss is needed")
  tokens = tuple(config.model.class_tokens)
  for name, loss in config.losses.items():
    key = f"losses.{name}"
    if "kind" not in loss:
      _fail(f"{key}.kind", "missing")
    if loss.kind not in model_lib.LOSS_KINDS:
      _fail(f"{key}.kind", f"unknown {loss.kind!r}; known: {model_lib.LOSS_KINDS}")
    if loss.get("token") not in tokens:
      _fail(f"{key}.token", f"{loss.get('token')!r} is not in model.class_tokens {tokens}")
    _number(config, f"{key}.weight", low=0)
    if "lr_scale" in loss:
      _number(config, f"{key}.lr_scale", low=0, low_open=True)
    if loss.kind == "cpsd":
      _number(config, f"{key}.omega", low=0, high=1, low_open=True, high_open=True)
      if "spread_weight" in loss:
        _number(config, f"{key}.spread_weight", low=0)
        _number(config, f"{key}.spread_target", low=0, low_open=True)
      head = loss.get("head", "dense")
      if head not in model_lib.EQUIVARIANT_HEADS:
        _fail(f"{key}.head", f"unknown {head!r}; known: {model_lib.EQUIVARIANT_HEADS}")
      if head == "shared" and config.model.get("patch_embed", "dense") == "dense":
        _fail(f"{key}.head", "'shared' reads the pitch-structured part of the token: set "
              "model.patch_embed to 'pitch' or 'hybrid'")
      if config.cqt.bins_per_octave != 12:
        _fail("cqt.bins_per_octave", "cpsd needs semitone bins (12 per octave): shifts are pitch classes")
      if config.data.max_offset < 12:
        _fail("data.max_offset", f"cpsd needs offsets 1..12 for every pitch-class shift, "
              f"got {config.data.max_offset}")
    elif loss.kind == "ntxent":
      _number(config, f"{key}.temperature", low=0, low_open=True)
      projector = loss.get("projector", "none")
      if projector not in model_lib.PROJECTORS:
        _fail(f"{key}.projector", f"unknown {projector!r}; known: {model_lib.PROJECTORS}")
      if projector == "mlp":
        _positive_int(config, f"{key}.projector_dim")
        _positive_int(config, f"{key}.projector_hidden")
      if config.batch_size < 2:
        _fail("batch_size", f"ntxent needs negatives: batch_size >= 2, got {config.batch_size}")
      pairs = loss.get("pairs", "all")
      if pairs not in losses.NTXENT_PAIRS:
        _fail(f"{key}.pairs", f"unknown {pairs!r}; known: {tuple(losses.NTXENT_PAIRS)}")
      if pairs != "all" and not loss.get("include_shift_view", False):
        _fail(f"{key}.pairs", f"{pairs!r} pairs views with A': needs include_shift_view")
      if loss.get("detach_shift_view", False):
        if not loss.get("include_shift_view", False):
          _fail(f"{key}.detach_shift_view", "needs include_shift_view: A' is not a view otherwise")
        if not config.model.get("class_blocks", 0):
          _fail(f"{key}.detach_shift_view", "A' reaches the token through its own class blocks "
                "only with model.class_blocks > 0")
        if tuple(config.model.get("detached_tokens", ())):
          _fail(f"{key}.detach_shift_view", "detaches the A' rows of its token; model."
                "detached_tokens detaches every row: set one of the two")


@register
def check_optim(config) -> None:
  lr = _number(config, "optim.lr", low=0, low_open=True)
  _number(config, "optim.end_lr", low=0, high=lr)
  warmup = _get(config, "optim.warmup_steps")
  if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
    _fail("optim.warmup_steps", f"must be an integer >= 0, got {warmup!r}")
  if warmup >= config.total_steps:
    _fail("optim.warmup_steps", f"{warmup} is not below total_steps = {config.total_steps}")
  _number(config, "optim.b1", low=0, high=1, high_open=True)
  _number(config, "optim.b2", low=0, high=1, high_open=True)
  _number(config, "optim.weight_decay", low=0)
  _number(config, "optim.grad_clip", low=0)  # 0 disables clipping.
  parse_lr_scale(config.optim.get("lr_scale", ""))


def parse_lr_scale(spec) -> dict[str, float]:
  """optim.lr_scale 'head_cpsd=3,backbone/cls_equivariant_block00=3' -> {path prefix: factor}."""
  if not isinstance(spec, str):
    _fail("optim.lr_scale", f"must be a string 'PREFIX=FACTOR,...', got {spec!r}")
  scales = {}
  for item in filter(None, (s.strip() for s in spec.split(","))):
    prefix, _, factor = (s.strip() for s in item.partition("="))
    try:
      value = float(factor)
    except ValueError:
      value = 0.0
    if not prefix or not value > 0 or not math.isfinite(value):
      _fail("optim.lr_scale", f"{item!r} is not PREFIX=FACTOR with a factor > 0")
    scales[prefix.strip("/")] = value
  return scales


@register
def check_mesh(config) -> None:
  if config.sharding not in SHARDINGS:
    _fail("sharding", f"unknown {config.sharding!r}; known: {SHARDINGS}")
  sizes = {}
  for axis in ("data", "fsdp"):
    size = _get(config, f"mesh.{axis}")
    if isinstance(size, bool) or not isinstance(size, int) or (size <= 0 and size != -1):
      _fail(f"mesh.{axis}", f"must be a positive integer or -1 (all remaining devices), got {size!r}")
    sizes[axis] = size
  if list(sizes.values()).count(-1) > 1:
    _fail("mesh", "at most one axis may be -1")
  fsdp = sizes["fsdp"]
  if config.sharding == "fsdp" and fsdp > 0:
    width = model_lib.model_dims(config)["width"]
    if width % fsdp:
      _fail("mesh.fsdp", f"the embedding width {width} is not divisible by {fsdp}")


@register
def check_eval(config) -> None:
  """config.eval (the periodic zero-shot eval); its data is checked by `mt2 train`."""
  from mt2_jax.data import dataset
  if "eval" not in config:
    return  # A config from before the eval section: no eval.
  data_dir = _get(config, "eval.data_dir")
  if not isinstance(data_dir, str):
    _fail("eval.data_dir", f"must be a prepared dataset's folder or '' (off), got {data_dir!r}")
  every = _get(config, "eval.every")
  if isinstance(every, bool) or not isinstance(every, int) or every < 0:
    _fail("eval.every", f"must be an integer >= 0 (0: off), got {every!r}")
  _positive_int(config, "eval.max_windows")
  if _get(config, "eval.split") not in dataset.SPLITS:
    _fail("eval.split", f"must be one of {dataset.SPLITS}, got {config.eval.split!r}")
  if data_dir and every and not any(l.kind == "cpsd" for l in config.losses.values()):
    _fail("eval.data_dir", "the zero-shot eval reads the head of a cpsd loss; config.losses has none")
