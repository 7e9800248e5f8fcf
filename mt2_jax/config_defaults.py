"""Shared defaults for `configs/*.py` and the `:ARGS` mini-language.

Config files are loaded by path (`--config=configs/mt2.py:runlocal`), so they
cannot reliably import each other; they import this module from the package
instead:

  from mt2_jax import config_defaults as defaults

  def get_config(arg=None):
    config = defaults.base_config()
    ...                                    # what makes this experiment
    return defaults.apply_arg(config, arg)

`arg` is a comma-separated list of presets and `key=value` overrides, as in
big_vision: `runlocal`, `runlocal,variant=small`, `model.dropout=0.1`,
`segment_frames=173`. Presets are applied first, then overrides, whatever
their order in the string, so `variant=small,runlocal` is a small model on
CPU-sized data.
"""

import ast

import ml_collections
from ml_collections import config_dict

# Shortcuts for the `key=value` part of `arg`; any dotted path works too.
ALIASES = {
    "variant": "model.variant",
    "dtype": "model.dtype",
    "segment_frames": "data.segment_frames",
    "frames": "data.segment_frames",
    "steps": "total_steps",
    "batch": "batch_size",
    "lr": "optim.lr",
}


def base_config() -> ml_collections.ConfigDict:
  """MT2 (docs/design.md §1): ViT-1D tiny, K=2 tokens, CPSD + NT-Xent, paper-sized run.

  Seven defaults depart from the paper's recipe as we read it, because with
  it the equivariant head collapses and the contrastive half pays for the
  equivariant one (docs/experiments.md): a hybrid patch embedding (half
  pitch-structured), LayerScale 0.01, the anti-collapse hinge on CPSD, an
  MLP projector for NT-Xent, a class-attention block of its own for each
  class token (the contrastive token's block reads only the dense part of
  the frame token), and 3x the
  learning rate for CPSD's head and its token's class block. The `paper`
  preset restores the paper's reading.
  """
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data_dir = ""  # Prepared dataset directory (`mt2 prepare --out`).
  config.total_steps = 100_000
  config.batch_size = 128  # Global, in tracks; each track gives 3 views.
  config.checkpoint_every = 1000
  config.log_every = 50
  config.keep_checkpoints = 3

  # STONE's front-end (docs/design.md §1.1): 15 s at 22 050 Hz -> 646 frames.
  config.cqt = dict(sample_rate=22050, fmin=27.5, n_bins=99, bins_per_octave=12, hop_length=512)
  # 84 of the 99 bins are kept; offsets o in {1..12} need 84 + 12 <= 99.
  config.data = dict(segment_frames=646, crop_bins=84, max_offset=12, num_workers=2,
                     prefetch_buffer_size=2,
                     # A random EQ of up to +-colour_db dB on each segment (data/augment.py:
                     # ViewSpec); 0, the paper's views.
                     colour_db=0.0,
                     # 'shared': segment B is cut at A's transposition (the paper);
                     # 'own': at one of its own, and CPSD's A-B term asks for the
                     # shift between them (data/augment.py: ViewSpec).
                     b_offset="shared",
                     # A regex on track ids (its first group, else the whole match)
                     # that makes a batch hold whole groups, e.g. '^[^_]+' every
                     # rendition of a demo piece (data/records.py:record_groups);
                     # '' (off), the paper's random batches.
                     group_pattern="")

  # The model's num_frames is data.segment_frames and num_bins data.crop_bins.
  config.model = dict(
      variant="tiny",
      class_tokens=("equivariant", "contrastive"),
      dtype="bfloat16",  # Activations; parameters are always float32.
      dropout=0.0,
      # 'full': every token attends to every token (standard ViT, the paper's
      # reading). 'isolated': class tokens see the frames and themselves only,
      # frames see frames only, so tokens are independent readouts.
      class_token_attention="full",
      # A class token starts as its learnable vector + the frames' mean ('mean'),
      # or as the vector alone ('vector', as in ViT).
      class_token_init="mean",
      remat=False,  # Rematerialise each block in the backward pass (saves memory).
      # Attention kernel: 'cudnn' (fused, GPU with 16-bit dtype), 'xla'
      # (einsums; every backend), 'auto' ('cudnn' where it applies).
      attention="auto",
      # How a frame becomes a token (docs/design.md): 'dense' is the paper's
      # Linear(84 -> d); 'pitch' folds the bins into [12 pitch classes x c]
      # channels (model.PitchEmbed); 'hybrid' puts both side by side.
      patch_embed="hybrid",
      # c; None: half the width for 'hybrid'. Fewer (2 at width 96) read more
      # instruments but made CPSD's escape from its plateau depend on the seed
      # (docs/experiments.md, session 18).
      pitch_channels=config_dict.placeholder(int),
      layerscale=0.01,  # LayerScale init on both branches of every block; 0: off.
      # LayerScale on every token ('all') or on the frame tokens only ('frames': class
      # tokens take full-size updates); docs/experiments.md, session 5.
      layerscale_tokens="frames",
      # 0: class tokens go through every block with the frames (the paper). n > 0:
      # the blocks see the frames only, then each class token reads them with n
      # class-attention blocks of its own (CaiT). 1 by default: with 0 the two
      # tokens are one feature and MT2's NT-Xent pays for CPSD (docs/experiments.md,
      # session 7). `class_token_attention` and `layerscale_tokens` only matter at 0.
      class_blocks=1,
      # Class tokens whose class blocks read the frames through a stop-gradient:
      # their losses train their own class blocks and heads, not the shared
      # blocks (needs class_blocks; docs/experiments.md, session 10).
      detached_tokens=(),
      # Which channels of the frames each class token's class blocks read
      # (needs class_blocks and the 'hybrid' patch embedding): 'all' (the
      # paper's reading), 'split': a token bound to a CPSD loss reads the
      # pitch-structured channels only, the others the dense ones; 'dense':
      # the tokens of no CPSD loss read the dense channels, the others all
      # (ViT1D.token_reads). 'dense' by default: the contrastive token then
      # reads more instruments and less key than with 'all' (session 19), and
      # CPSD left its plateau with each of three seeds on the gm corpus, where
      # with 'split' it was late with one (docs/experiments.md, session 20).
      token_reads="dense",
      # Unset (None): the variant's. Set one to vary a single dimension, e.g.
      # --config.model.depth=4.
      width=config_dict.placeholder(int),
      depth=config_dict.placeholder(int),
      num_heads=config_dict.placeholder(int),
      mlp_dim=config_dict.placeholder(int),
  )

  # Each loss is bound by name to one class token and owns its head.
  config.losses = dict(
      # head: 'dense' (the paper's Linear(d -> 12)) or 'shared' (model.EquivariantHead).
      # spread_weight: weight of losses.circle_spread_hinge(target spread_target); 0: off.
      # lr_scale (any loss; 1 where unset): the learning rate of the loss's head
      # and of its token's class blocks, times the base rate. 1, the paper's one
      # rate: 3 (the default in sessions 11-20) raised the zero-shot readout as it
      # was then read; with the readout fixed it reads as much at 1 on the dry
      # corpus, where 1 brings MT2's NT-Xent level with the contrastive-only
      # model's; on gm 3 gives the equivariant half more (docs/experiments.md,
      # session 21).
      cpsd=dict(kind="cpsd", token="equivariant", weight=1.0, omega=7 / 12, head="dense",
                spread_weight=1.0, spread_target=0.5, lr_scale=1.0),
      ntxent=dict(
          kind="ntxent",
          token="contrastive",
          weight=1.0,
          # SimCLR's. 0.5 reads fewer instruments; 0.05 costs the zero-shot key
          # readout on the dry corpus (docs/experiments.md, session 15).
          temperature=0.1,
          # 'mlp' (SimCLR's projector) or 'none' (NT-Xent on the token itself).
          # 'mlp' by default: with 'none' MT2's NT-Xent ended 44% above the
          # contrastive-only model's, with 'mlp' 4% (docs/experiments.md).
          projector="mlp",
          projector_dim=128,
          projector_hidden=1024,
          # A' (A transposed) as a third positive view: NT-Xent can then no
          # longer match A and B by the key they share, so the token names what
          # transposition leaves alone. On by default since session 12. With both
          # class tokens reading every channel it collapsed CPSD at one rate
          # (sessions 10 and 12, hence cpsd.lr_scale=3 then); with the
          # contrastive token reading the dense channels (model.token_reads)
          # CPSD holds beside it at one rate (docs/experiments.md, session 21).
          include_shift_view=True,
          # Which pairs of those views are positives: 'all'; 'shift' (A-A' and B-A':
          # not A-B, which share the crop's transposition); 'time' (A-B and B-A':
          # not A-A', which share their frames); 'disjoint' (B-A' only, sharing
          # neither). All but 'all' need include_shift_view (docs/design.md §1.4).
          pairs="all",
          # With it: A' reaches NT-Xent through the token's own class blocks only
          # (its frames through a stop-gradient), so that the invariance to
          # transposition A' asks for is learnt there, not in the blocks CPSD
          # shares (needs model.class_blocks; docs/experiments.md, session 10).
          detach_shift_view=False,
      ),
  )

  # AdamW, linear warm-up then cosine decay (docs/design.md §1.5).
  config.optim = dict(
      lr=5e-4, warmup_steps=5000, end_lr=1e-6, b1=0.9, b2=0.98, weight_decay=0.05, grad_clip=1.0,
      # A learning rate per part by parameter path: 'PREFIX=FACTOR,...' multiplies
      # the updates of the parameters whose path ('head_cpsd/dense/kernel') starts
      # with PREFIX; it wins over losses.<name>.lr_scale where both name a part.
      lr_scale="")

  # Zero-shot key-signature accuracy of each CPSD head, every `every` steps, on
  # split `split` of a prepared dataset with a `key` column (mt2_jax.train.diagnostics;
  # the centre max_windows windows of each track). data_dir '' or every 0: off.
  config.eval = dict(data_dir="", split="validation", every=0, max_windows=4)

  config.mesh = dict(data=-1, fsdp=1)  # -1: all remaining devices.
  config.sharding = "data"  # 'data' (replicated params) or 'fsdp'.
  return config


def runlocal(config: ml_collections.ConfigDict) -> None:
  """Shrinks a config in place to a run that finishes on a 2-core CPU."""
  config.model.variant = "test"
  config.model.dtype = "float32"  # bfloat16 matmuls are emulated on most CPUs.
  config.data.segment_frames = 128  # About 3 s of audio.
  config.data.num_workers = 0
  config.batch_size = 8
  config.total_steps = 50
  config.checkpoint_every = 25
  config.log_every = 5
  config.optim.warmup_steps = 5
  for loss in config.losses.values():
    if "projector_hidden" in loss:
      loss.projector_hidden = 64
      loss.projector_dim = 32


def paper(config: ml_collections.ConfigDict) -> None:
  """The paper's architecture as we read it (docs/design.md §1.3-1.4): a dense patch
  embedding, plain blocks that the class tokens go through with the frames, the
  dense equivariant head, no anti-collapse term, NT-Xent on the token itself
  with A and B as the positives.
  At the demo's size its equivariant head collapses (docs/experiments.md)."""
  config.model.patch_embed = "dense"
  config.model.layerscale = 0.0
  config.model.class_token_init = "mean"
  config.model.class_blocks = 0
  config.model.token_reads = "all"
  for loss in config.losses.values():
    loss.lr_scale = 1.0  # One learning rate.
    if loss.kind == "cpsd":
      loss.head = "dense"
      loss.spread_weight = 0.0
    elif loss.kind == "ntxent":
      loss.projector = "none"
      loss.include_shift_view = False


PRESETS = {"runlocal": runlocal, "paper": paper}


def _parse_value(text: str):
  """Python literal if it parses as one (1, 0.5, True, ('a','b')), else str."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _set(config: ml_collections.ConfigDict, path: str, value) -> None:
  *parents, leaf = path.split(".")
  node = config
  for name in parents:
    if name not in node:
      raise ValueError(f"config arg: unknown key {path!r} ({name!r} not in config)")
    node = node[name]
  if leaf not in node:
    raise ValueError(f"config arg: unknown key {path!r}")
  old = node[leaf]
  # Keep the declared type where the literal is a narrower one (1 -> 1.0).
  if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if isinstance(old, tuple) and isinstance(value, (str, list)):
    value = (value,) if isinstance(value, str) else tuple(value)
  node[leaf] = value


def apply_arg(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Applies `arg` ('runlocal,variant=small', ...) to `config` and returns it."""
  if not arg:
    return config
  items = [item.strip() for item in arg.split(",") if item.strip()]
  overrides = []
  for item in items:
    if "=" in item:
      key, value = item.split("=", 1)
      overrides.append((ALIASES.get(key.strip(), key.strip()), _parse_value(value.strip())))
    elif item in PRESETS:
      PRESETS[item](config)
    else:
      raise ValueError(f"config arg: unknown preset {item!r}; known: {sorted(PRESETS)}")
  for path, value in overrides:
    _set(config, path, value)
  return config
