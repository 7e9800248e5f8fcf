"""The MT2 module (backbone + one head per loss) and how a config builds it."""

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mt2_jax.model.backbone import ViT1D, pitch_embed_channels
from mt2_jax.model.heads import LOSS_KINDS, ContrastiveHead, EquivariantHead, HeadSpec

# name -> (width d, depth, heads, MLP hidden). `test` is for unit tests and CPU.
VARIANTS = {
    "test": dict(width=32, depth=2, num_heads=2, mlp_dim=64),
    "tiny": dict(width=192, depth=12, num_heads=3, mlp_dim=768),  # The paper's size.
    "small": dict(width=384, depth=12, num_heads=6, mlp_dim=1536),
    "base": dict(width=768, depth=12, num_heads=12, mlp_dim=3072),
}


class MT2(nn.Module):
  """Backbone + one head per loss. Params: {'backbone', 'head_<loss name>'...}."""
  backbone: ViT1D
  heads: Sequence[HeadSpec] = ()

  @nn.compact
  def __call__(self, x, *, train: bool = False, with_heads: bool = True, detach_rows=None):
    """x: float [B, num_bins, T]; detach_rows: ViT1D's. Returns the dict of named outputs."""
    out = dict(self.backbone(x, train=train, detach_rows=detach_rows))
    if not with_heads:
      return out
    for spec in self.heads:
      feature = out[f"cls_{spec.token}"]
      if spec.kind == "cpsd":
        b = self.backbone
        head = EquivariantHead(spec.head, pitch_embed_channels(b.patch_embed, b.width, b.pitch_channels),
                               name=f"head_{spec.name}")
      elif spec.kind == "ntxent":
        head = ContrastiveHead(spec.projector, spec.projector_dim, spec.projector_hidden,
                               name=f"head_{spec.name}")
      else:
        raise ValueError(f"unknown loss kind {spec.kind!r}; known: {LOSS_KINDS}")
      out[f"head_{spec.name}"] = head(feature)
    return out


def head_specs(config) -> tuple[HeadSpec, ...]:
  """The heads of `config.losses`, in sorted loss-name order."""
  specs = []
  for name in sorted(config.losses):
    loss = config.losses[name]
    extra = {k: loss[k] for k in ("projector", "projector_dim", "projector_hidden", "head")
             if k in loss}
    specs.append(HeadSpec(name=name, kind=loss.kind, token=loss.token, **extra))
  return tuple(specs)


def model_dims(config) -> dict[str, int]:
  """width, depth, num_heads, mlp_dim: the variant's, unless set in config.model."""
  if config.model.variant not in VARIANTS:
    raise ValueError(f"config.model.variant: unknown {config.model.variant!r}; known: {sorted(VARIANTS)}")
  dims = dict(VARIANTS[config.model.variant])
  for key in dims:
    if config.model.get(key) is not None:
      dims[key] = config.model[key]
  return dims


def shift_view_detached(config) -> bool:
  """Whether a loss asks for A' through its token's own class blocks only (the
  objective then flags the A' rows: ViT1D.detach_rows)."""
  return any(l.kind == "ntxent" and l.get("detach_shift_view", False)
             for l in config.losses.values())


def detached_tokens(config) -> tuple[str, ...]:
  """model.detached_tokens, or the tokens of the losses with detach_shift_view."""
  if shift_view_detached(config):
    return tuple(l.token for l in config.losses.values()
                 if l.kind == "ntxent" and l.get("detach_shift_view", False))
  return tuple(config.model.get("detached_tokens", ()))


TOKEN_READS = ("all", "split", "dense")  # config.model.token_reads.


def token_reads(config) -> tuple[str, ...]:
  """ViT1D.token_reads of config.model.token_reads: () for 'all'; 'dense' for
  the tokens of no CPSD loss; the tokens of CPSD losses 'pitch' with 'split',
  'all' with 'dense'."""
  mode = config.model.get("token_reads", "all")
  if mode == "all":
    return ()
  if mode not in TOKEN_READS:
    raise ValueError(f"config.model.token_reads: unknown {mode!r}; known: {TOKEN_READS}")
  cpsd_tokens = {l.token for l in config.losses.values() if l.kind == "cpsd"}
  cpsd_reads = "pitch" if mode == "split" else "all"
  return tuple(cpsd_reads if t in cpsd_tokens else "dense" for t in config.model.class_tokens)


def build_model(config) -> MT2:
  """The MT2 module described by `config.model`, `config.data` and `config.losses`."""
  backbone = ViT1D(
      **model_dims(config),
      num_frames=config.data.segment_frames,
      class_tokens=tuple(config.model.class_tokens),
      dtype=jnp.dtype(config.model.dtype),
      dropout=config.model.get("dropout", 0.0),
      class_token_attention=config.model.get("class_token_attention", "full"),
      class_token_init=config.model.get("class_token_init", "mean"),
      remat=config.model.get("remat", False),
      attention=config.model.get("attention", "auto"),
      patch_embed=config.model.get("patch_embed", "dense"),
      pitch_channels=config.model.get("pitch_channels", None),
      layerscale=config.model.get("layerscale", 0.0),
      layerscale_tokens=config.model.get("layerscale_tokens", "all"),
      class_blocks=config.model.get("class_blocks", 0),
      detached_tokens=detached_tokens(config),
      token_reads=token_reads(config),
      name="backbone")
  return MT2(backbone=backbone, heads=head_specs(config))


def count_params(tree) -> int:
  """Number of scalars in a (possibly boxed, possibly abstract) parameter tree."""
  return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(nn.unbox(tree))))


def abstract_variables(model: MT2, num_bins: int, num_frames: int, batch: int = 1):
  """`jax.eval_shape` of `model.init`: boxed ShapeDtypeStructs, no allocation."""
  x = jax.ShapeDtypeStruct((batch, num_bins, num_frames), jnp.float32)
  return jax.eval_shape(lambda rng: model.init(rng, jnp.zeros(x.shape, x.dtype)), jax.random.key(0))
