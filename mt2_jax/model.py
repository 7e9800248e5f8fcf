"""ViT-1D with K named class tokens, and the heads the losses are bound to.

Input: a cropped CQT `x` of shape [B, num_bins, T] (84 bins, T <= num_frames).
One token per time frame (a `Linear(num_bins -> d)` of the frame's column),
learned absolute positional embedding on the frame tokens, K class tokens
(learnable vector + mean of the projected frames) prepended, pre-LayerNorm
blocks, final LayerNorm (docs/design.md §1.3).

`MT2.__call__` returns a dict of named outputs, all after the final LayerNorm:
  cls_<name>   [B, d]   one per class token, in config order
  cls_mean     [B, d]   average of the class tokens (the paper's best feature)
  tokens       [B, T, d]
  tokens_mean  [B, d]
and, unless `with_heads=False`, one `head_<loss name>` per configured loss:
  equivariant head (kind 'cpsd')   [B, 12]  softmax key-signature profile, f32
  contrastive head (kind 'ntxent') [B, p]   token or MLP projection, f32

Parameters are float32 and carry logical axis names; `logical_axis_rules`
maps them to a mesh for data parallelism or FSDP.
"""

import functools
import logging
import math
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# name -> (width d, depth, heads, MLP hidden). `test` is for unit tests and CPU.
VARIANTS = {
    "test": dict(width=32, depth=2, num_heads=2, mlp_dim=64),
    "tiny": dict(width=192, depth=12, num_heads=3, mlp_dim=768),  # The paper's size.
    "small": dict(width=384, depth=12, num_heads=6, mlp_dim=1536),
    "base": dict(width=768, depth=12, num_heads=12, mlp_dim=3072),
}

# Loss kinds: 'cpsd' gets an EquivariantHead, 'ntxent' a ContrastiveHead.
LOSS_KINDS = ("cpsd", "ntxent")
PROJECTORS = ("none", "mlp")
NUM_PITCH_CLASSES = 12

# Logical names of parameter dimensions, plus 'batch' for activations and
# inputs. Only 'embed' is ever sharded among parameters: every large matrix has
# it, and the widths of all variants are multiples of 8.
_REPLICATED = ("bins", "pitch_channels", "frames", "classes", "mlp", "qkv", "heads", "kv", "pitch", "proj_hidden", "proj")
LOGICAL_AXIS_RULES = {
    # Data parallel: parameters replicated; the batch over every device.
    "data": (("batch", ("data", "fsdp")), ("embed", None)) + tuple((n, None) for n in _REPLICATED),
    # FSDP: the 'embed' dimension of every parameter over the 'fsdp' mesh axis;
    # XLA gathers each weight where it is used.
    "fsdp": (("batch", ("data", "fsdp")), ("embed", "fsdp")) + tuple((n, None) for n in _REPLICATED),
}


def logical_axis_rules(sharding: str) -> tuple:
  """Flax logical->mesh rules for `config.sharding` ('data' or 'fsdp')."""
  if sharding not in LOGICAL_AXIS_RULES:
    raise ValueError(f"sharding must be one of {sorted(LOGICAL_AXIS_RULES)}, got {sharding!r}")
  return LOGICAL_AXIS_RULES[sharding]


def param_shardings(boxed_variables: Any, mesh: jax.sharding.Mesh, sharding: str) -> Any:
  """NamedShardings for a (possibly abstract) boxed variables tree from `init`.

  Use on `jax.eval_shape(model.init, ...)` to get shardings before any array
  exists; the result has the structure of `nn.unbox(boxed_variables)`.
  """
  specs = nn.get_partition_spec(boxed_variables)
  return nn.logical_to_mesh_sharding(specs, mesh, logical_axis_rules(sharding))


def _init(initializer, *axes):
  return nn.with_logical_partitioning(initializer, axes)


_DENSE_INIT = nn.initializers.xavier_uniform()
_ONES = nn.initializers.ones
_ZEROS = nn.initializers.zeros


def _layer_norm(name: str, dtype) -> nn.LayerNorm:
  return nn.LayerNorm(
      name=name, dtype=dtype, param_dtype=jnp.float32,
      scale_init=_init(_ONES, "embed"), bias_init=_init(_ZEROS, "embed"))


class HeadSpec(NamedTuple):
  """One loss's head: `head_<name>` reads `cls_<token>`."""
  name: str
  kind: str  # 'cpsd' -> equivariant head; 'ntxent' -> contrastive head.
  token: str
  projector: str = "none"
  projector_dim: int = 128
  projector_hidden: int = 1024
  head: str = "dense"  # 'cpsd' only: EquivariantHead.readout.


class MlpBlock(nn.Module):
  """Linear(d -> mlp_dim), GELU, Linear(mlp_dim -> d)."""
  mlp_dim: int
  dtype: Any = jnp.float32
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, *, train: bool):
    d = x.shape[-1]
    h = nn.Dense(self.mlp_dim, dtype=self.dtype, param_dtype=jnp.float32, name="fc1",
                 kernel_init=_init(_DENSE_INIT, "embed", "mlp"),
                 bias_init=_init(_ZEROS, "mlp"))(x)
    h = nn.gelu(h)
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return nn.Dense(d, dtype=self.dtype, param_dtype=jnp.float32, name="fc2",
                    kernel_init=_init(_DENSE_INIT, "mlp", "embed"),
                    bias_init=_init(_ZEROS, "embed"))(h)


ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn")


def attention_implementation(name: str, dtype=jnp.bfloat16) -> str:
  """Resolves 'auto': 'cudnn' on a GPU with 16-bit activations, else 'xla'."""
  if name not in ATTENTION_IMPLEMENTATIONS:
    raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {name!r}")
  if name != "auto":
    return name
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  return "cudnn" if half and jax.default_backend() == "gpu" else "xla"


@functools.lru_cache(maxsize=None)
def _cudnn_supported(x_shape, num_heads, head_dim, dtype, mask_shape) -> bool:
  """Whether cuDNN's fused attention takes these shapes (traced abstractly, no compute).

  Cached: asked once per shape, not once per block and trace.
  """
  batch, length, _ = x_shape
  qkv = jax.ShapeDtypeStruct((batch, length, num_heads, head_dim), dtype)
  mask = None if mask_shape is None else jax.ShapeDtypeStruct(mask_shape, jnp.bool_)
  try:
    jax.eval_shape(lambda q, k, v, m: jax.nn.dot_product_attention(q, k, v, mask=m,
                                                                   implementation="cudnn"),
                   qkv, qkv, qkv, mask)
    return True
  except (NotImplementedError, ValueError, RuntimeError, TypeError) as e:
    logging.warning("cuDNN attention does not apply (%s); using the XLA einsums", e)
    return False


class _Einsum(nn.Module):
  """`einsum(spec, x, kernel) + bias`: a Dense whose output layout the caller picks.

  Parameters 'kernel' and 'bias' are those nn.DenseGeneral would make for the
  same shapes, so checkpoints do not depend on the layout chosen.
  """
  spec: str
  kernel_shape: tuple
  kernel_axes: tuple
  bias_axes: tuple  # The kernel's output axes, in kernel order.
  bias_broadcast: tuple  # Index that broadcasts the bias against the output.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", _init(_DENSE_INIT, *self.kernel_axes), self.kernel_shape,
                        jnp.float32)
    bias_shape = self.kernel_shape[-len(self.bias_axes):]
    bias = self.param("bias", _init(_ZEROS, *self.bias_axes), bias_shape, jnp.float32)
    y = jnp.einsum(self.spec, x.astype(self.dtype), kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)[self.bias_broadcast]


class SelfAttention(nn.Module):
  """Multi-head self-attention; q, k and v come from one fused projection.

  Two implementations of the same arithmetic and parameters (`implementation`):
    'cudnn'  `jax.nn.dot_product_attention(implementation='cudnn')`, the fused
             flash-attention kernel: GPU only, 16-bit activations.
    'xla'    explicit einsums projecting straight into [3, B, N, L, H], so the
             batched score and value matmuls need no transposes, and a float32
             softmax. On CPU this is faster than dot_product_attention's XLA
             path, which transposes q, k, v and the scores around each matmul.
  'auto' takes 'cudnn' where it applies, else 'xla'.
  """
  num_heads: int
  dtype: Any = jnp.float32
  implementation: str = "auto"

  @nn.compact
  def __call__(self, x, mask=None):
    """x: [B, L, d]; mask: None or bool [L, L] (True = may attend). -> [B, L, d]."""
    d = x.shape[-1]
    n, h = self.num_heads, d // self.num_heads
    qkv_kernel = dict(kernel_shape=(d, 3, n, h), kernel_axes=("embed", "qkv", "heads", "kv"),
                      bias_axes=("qkv", "heads", "kv"), dtype=self.dtype, name="qkv")
    out_kernel = dict(kernel_shape=(n, h, d), kernel_axes=("heads", "kv", "embed"),
                      bias_axes=("embed",), bias_broadcast=(None, None), dtype=self.dtype,
                      name="out")
    use_cudnn = attention_implementation(self.implementation, self.dtype) == "cudnn"
    if use_cudnn and self.implementation == "auto":  # An explicit 'cudnn' may raise instead.
      mask_shape = None if mask is None else mask.shape
      use_cudnn = _cudnn_supported(x.shape, n, h, jnp.dtype(self.dtype), mask_shape)
    if use_cudnn:
      qkv = _Einsum("bld,dsnh->blsnh", bias_broadcast=(None, None), **qkv_kernel)(x)
      o = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], mask=mask,
                                       implementation="cudnn")  # [B, L, N, H]
      return _Einsum("blnh,nhd->bld", **out_kernel)(o)

    # [3, B, N, L, H]: the bias [3, N, H] broadcast over B and L.
    qkv = _Einsum("bld,dsnh->sbnlh", bias_broadcast=(slice(None), None, slice(None), None),
                  **qkv_kernel)(x)
    q, k, v = qkv[0] * jnp.asarray(h ** -0.5, self.dtype), qkv[1], qkv[2]
    scores = jnp.einsum("bnlh,bnmh->bnlm", q, k).astype(jnp.float32)
    if mask is not None:
      scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
    o = jnp.einsum("bnlm,bnmh->bnlh", probs, v)
    return _Einsum("bnlh,nhd->bld", **out_kernel)(o)


class EncoderBlock(nn.Module):
  """Pre-LayerNorm block: x + g1 * MHSA(LN(x)), then x + g2 * MLP(LN(x)).

  g1, g2 are LayerScale vectors [d] (CaiT) initialised at `layerscale`, or
  absent when `layerscale` is 0 (the plain ViT block). A small init makes
  every block start near the identity, so the pitch-class layout that
  `PitchEmbed` gives the tokens reaches the heads intact early in training
  (docs/experiments.md: without it the equivariant head collapses).
  With `layerscale_tokens='frames'` the first `num_class_tokens` tokens take
  full-size updates (scale 1): a class token is then free to become its own
  function of the frames early, instead of staying the shared frame mean that
  it starts from (docs/design.md §2.3).
  """
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32
  dropout: float = 0.0
  attention: str = "auto"
  layerscale: float = 0.0
  layerscale_tokens: str = "all"  # 'all' or 'frames'.
  num_class_tokens: int = 0

  def _scale(self, name: str, h):
    """h [B, L, d] -> h scaled per channel (and not at all on class tokens if 'frames')."""
    if not self.layerscale:
      return h
    gamma = self.param(name, _init(nn.initializers.constant(self.layerscale), "embed"),
                       (h.shape[-1],), jnp.float32).astype(h.dtype)
    if self.layerscale_tokens == "frames":
      is_cls = (jnp.arange(h.shape[1]) < self.num_class_tokens)[:, None]  # [L, 1]
      return h * jnp.where(is_cls, jnp.ones_like(gamma), gamma)
    return h * gamma

  @nn.compact
  def __call__(self, x, mask=None, train: bool = False):
    # `train` is positional so that nn.remat can treat it as static (argnum 3).
    h = _layer_norm("ln1", self.dtype)(x)
    h = SelfAttention(self.num_heads, dtype=self.dtype, implementation=self.attention,
                      name="attn")(h, mask)
    x = x + nn.Dropout(self.dropout, deterministic=not train)(self._scale("ls1", h))
    h = _layer_norm("ln2", self.dtype)(x)
    h = MlpBlock(self.mlp_dim, dtype=self.dtype, dropout=self.dropout, name="mlp")(h, train=train)
    return x + nn.Dropout(self.dropout, deterministic=not train)(self._scale("ls2", h))


PATCH_EMBEDS = ("dense", "pitch", "hybrid")


def pitch_embed_channels(patch_embed: str, width: int, channels: int | None = None) -> int:
  """Channels per pitch class of the pitch-structured part of a token (0 for 'dense').

  Default: all of the token for 'pitch' (width // 12), half of it for 'hybrid'
  (width // 24).
  """
  if patch_embed == "dense":
    return 0
  if patch_embed not in PATCH_EMBEDS:
    raise ValueError(f"patch_embed must be one of {PATCH_EMBEDS}, got {patch_embed!r}")
  if channels:
    return channels
  return width // NUM_PITCH_CLASSES if patch_embed == "pitch" else width // (2 * NUM_PITCH_CLASSES)


class PitchEmbed(nn.Module):
  """A frame's bins -> [12 pitch classes x c] channels, flattened: [B, T, K] -> [B, T, 12c].

  Each bin is mapped to c channels by the same pointwise function (a
  width-1 convolution along frequency, then GELU), the channels are averaged
  over the octaves (bin k goes to pitch class k mod 12, so a crop shifted by s
  bins rolls the pitch-class axis by s), and each channel is standardised
  across the 12 pitch classes (the contrast step: what is left is which
  pitch classes sound, not how loud the frame is). Shift-equivariant along
  frequency up to the octaves at the crop's edges, like STONE's ChromaNet
  front-end; the paper's Linear(K -> d) is not.
  """
  channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_btk):
    batch, frames, bins = x_btk.shape
    if bins % NUM_PITCH_CLASSES:
      raise ValueError(f"the pitch patch embedding needs whole octaves of 12 bins, got {bins}")
    w = self.param("kernel", _init(nn.initializers.normal(1.0), "pitch_channels"),
                   (self.channels,), jnp.float32)
    b = self.param("bias", _init(nn.initializers.normal(1.0), "pitch_channels"),
                   (self.channels,), jnp.float32)
    h = nn.gelu(x_btk[..., None] * w.astype(self.dtype) + b.astype(self.dtype))  # [B, T, K, c]
    h = h.reshape(batch, frames, bins // NUM_PITCH_CLASSES, NUM_PITCH_CLASSES, self.channels)
    h = jnp.mean(h.astype(jnp.float32), axis=2)  # [B, T, 12, c]
    h = (h - jnp.mean(h, axis=2, keepdims=True)) * jax.lax.rsqrt(
        jnp.var(h, axis=2, keepdims=True) + 1e-5)
    return h.reshape(batch, frames, NUM_PITCH_CLASSES * self.channels).astype(self.dtype)


class ViT1D(nn.Module):
  """The backbone: [B, num_bins, T] -> named features (see module docstring)."""
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  num_frames: int
  class_tokens: Sequence[str] = ("equivariant", "contrastive")
  dtype: Any = jnp.bfloat16
  dropout: float = 0.0
  class_token_attention: str = "full"
  remat: bool = False
  attention: str = "auto"  # SelfAttention.implementation.
  patch_embed: str = "dense"  # 'dense' (the paper), 'pitch' or 'hybrid' (PitchEmbed + dense).
  pitch_channels: int | None = None  # c of PitchEmbed; None: pitch_embed_channels' default.
  layerscale: float = 0.0  # EncoderBlock.layerscale; 0: no LayerScale (the paper).
  layerscale_tokens: str = "all"  # EncoderBlock.layerscale_tokens.

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    batch, _, frames = x.shape
    if frames > self.num_frames:
      raise ValueError(
          f"input has {frames} frames but the model was built for at most num_frames="
          f"{self.num_frames} (config.data.segment_frames); embed longer audio in windows")
    num_classes = len(self.class_tokens)

    # One token per frame: the frame's column of bins, projected to d.
    x = jnp.swapaxes(x, 1, 2).astype(self.dtype)  # [B, T, bins]
    frames_btd = self._embed_frames(x)

    # Class token = learnable vector + mean of the projected frames, taken
    # before the positional embedding so that it does not depend on where a
    # window sits in the table (T may be shorter than num_frames).
    cls_vectors = self.param(
        "cls", _init(nn.initializers.normal(0.02), "classes", "embed"),
        (num_classes, self.width), jnp.float32)
    frame_mean = jnp.mean(frames_btd, axis=1, keepdims=True)  # [B, 1, d]
    cls_bkd = cls_vectors.astype(self.dtype)[None] + frame_mean

    # Position embedding on frame tokens only: class tokens are told apart by
    # their own learnable vector already, so a position for them would be a
    # second, redundant bias; and the table's shape does not depend on K, so
    # models with different numbers of tokens share everything else.
    posemb = self.param(
        "pos_embed", _init(nn.initializers.normal(0.02), "frames", "embed"),
        (self.num_frames, self.width), jnp.float32)
    frames_btd = frames_btd + posemb[:frames].astype(self.dtype)[None]

    h = jnp.concatenate([cls_bkd, frames_btd], axis=1)  # [B, K + T, d]
    mask = self._attention_mask(num_classes, frames)

    block = nn.remat(EncoderBlock, static_argnums=(3,)) if self.remat else EncoderBlock
    for i in range(self.depth):
      h = block(self.num_heads, self.mlp_dim, dtype=self.dtype, dropout=self.dropout,
                attention=self.attention, layerscale=self.layerscale,
                layerscale_tokens=self.layerscale_tokens, num_class_tokens=num_classes,
                name=f"block{i:02d}")(h, mask, train)
    h = _layer_norm("final_norm", self.dtype)(h)

    out = {f"cls_{name}": h[:, i] for i, name in enumerate(self.class_tokens)}
    out["cls_mean"] = jnp.mean(h[:, :num_classes], axis=1)
    out["tokens"] = h[:, num_classes:]
    out["tokens_mean"] = jnp.mean(out["tokens"], axis=1)
    return out

  def _embed_frames(self, x_btk):
    """[B, T, bins] -> [B, T, d]: dense, pitch-structured, or both side by side."""
    pitch_c = pitch_embed_channels(self.patch_embed, self.width, self.pitch_channels)
    dense_width = self.width - NUM_PITCH_CLASSES * pitch_c
    if dense_width < 0 or (self.patch_embed == "pitch" and dense_width):
      raise ValueError(f"patch_embed {self.patch_embed!r}: 12 x pitch_channels ({pitch_c}) must "
                       f"{'equal' if self.patch_embed == 'pitch' else 'not exceed'} the width "
                       f"{self.width}")
    parts = []
    if pitch_c:
      parts.append(PitchEmbed(pitch_c, dtype=self.dtype, name="pitch_embed")(x_btk))
    if dense_width:
      parts.append(nn.Dense(
          dense_width, dtype=self.dtype, param_dtype=jnp.float32, name="patch_embed",
          kernel_init=_init(nn.initializers.lecun_normal(), "bins", "embed"),
          bias_init=_init(_ZEROS, "embed"))(x_btk))
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)

  def _attention_mask(self, num_classes: int, frames: int):
    if self.class_token_attention == "full":
      return None
    if self.class_token_attention != "isolated":
      raise ValueError(f"class_token_attention must be 'full' or 'isolated', "
                       f"got {self.class_token_attention!r}")
    # Class token i sees itself and the frames; frames see frames only.
    length = num_classes + frames
    is_cls = jnp.arange(length) < num_classes
    same = jnp.eye(length, dtype=bool)
    return (~is_cls[None, :]) | same  # [L (query), L (key)]


EQUIVARIANT_HEADS = ("dense", "shared")


class EquivariantHead(nn.Module):
  """Logits over 12 classes and softmax: the key-signature profile y [B, 12], in float32.

  'dense' is the paper's Linear(d -> 12). 'shared' reads the token's
  pitch-structured part ([12 x c] from PitchEmbed) with one Linear(c -> 1)
  shared by the 12 pitch classes, so that rolling the pitch classes rolls
  the profile (STONE's classifier is shared across pitch classes likewise).
  """
  readout: str = "dense"
  pitch_channels: int = 0  # c of the token's pitch-structured part ('shared' only).

  @nn.compact
  def __call__(self, feature_bd):
    if self.readout == "shared":
      if not self.pitch_channels:
        raise ValueError("the 'shared' equivariant head needs model.patch_embed 'pitch' or 'hybrid'")
      c = self.pitch_channels
      h = feature_bd[:, :NUM_PITCH_CLASSES * c].astype(jnp.float32)
      h = h.reshape(-1, NUM_PITCH_CLASSES, c)
      w = self.param("shared", _init(nn.initializers.normal(c ** -0.5), "pitch_channels"), (c,),
                     jnp.float32)
      return jax.nn.softmax(h @ w, axis=-1)
    if self.readout != "dense":
      raise ValueError(f"equivariant head must be one of {EQUIVARIANT_HEADS}, got {self.readout!r}")
    logits = nn.Dense(
        NUM_PITCH_CLASSES, dtype=jnp.float32, param_dtype=jnp.float32, name="dense",
        kernel_init=_init(_DENSE_INIT, "embed", "pitch"),
        bias_init=_init(_ZEROS, "pitch"))(feature_bd.astype(jnp.float32))
    return jax.nn.softmax(logits, axis=-1)


class ContrastiveHead(nn.Module):
  """The token itself ('none') or an MLP projector ('mlp'), in float32."""
  projector: str = "none"
  projector_dim: int = 128
  projector_hidden: int = 1024

  @nn.compact
  def __call__(self, feature_bd):
    z = feature_bd.astype(jnp.float32)
    if self.projector == "none":
      return z
    if self.projector != "mlp":
      raise ValueError(f"projector must be one of {PROJECTORS}, got {self.projector!r}")
    z = nn.Dense(self.projector_hidden, dtype=jnp.float32, param_dtype=jnp.float32, name="fc1",
                 kernel_init=_init(_DENSE_INIT, "embed", "proj_hidden"),
                 bias_init=_init(_ZEROS, "proj_hidden"))(z)
    z = nn.gelu(z)
    return nn.Dense(self.projector_dim, dtype=jnp.float32, param_dtype=jnp.float32, name="fc2",
                    kernel_init=_init(_DENSE_INIT, "proj_hidden", "proj"),
                    bias_init=_init(_ZEROS, "proj"))(z)


class MT2(nn.Module):
  """Backbone + one head per loss. Params: {'backbone', 'head_<loss name>'...}."""
  backbone: ViT1D
  heads: Sequence[HeadSpec] = ()

  @nn.compact
  def __call__(self, x, *, train: bool = False, with_heads: bool = True):
    """x: float [B, num_bins, T]. Returns the dict of named outputs."""
    out = dict(self.backbone(x, train=train))
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


def build_model(config) -> MT2:
  """The MT2 module described by `config.model`, `config.data` and `config.losses`."""
  backbone = ViT1D(
      **model_dims(config),
      num_frames=config.data.segment_frames,
      class_tokens=tuple(config.model.class_tokens),
      dtype=jnp.dtype(config.model.dtype),
      dropout=config.model.get("dropout", 0.0),
      class_token_attention=config.model.get("class_token_attention", "full"),
      remat=config.model.get("remat", False),
      attention=config.model.get("attention", "auto"),
      patch_embed=config.model.get("patch_embed", "dense"),
      pitch_channels=config.model.get("pitch_channels", None),
      layerscale=config.model.get("layerscale", 0.0),
      layerscale_tokens=config.model.get("layerscale_tokens", "all"),
      name="backbone")
  return MT2(backbone=backbone, heads=head_specs(config))


def count_params(tree) -> int:
  """Number of scalars in a (possibly boxed, possibly abstract) parameter tree."""
  return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(nn.unbox(tree))))


def abstract_variables(model: MT2, num_bins: int, num_frames: int, batch: int = 1):
  """`jax.eval_shape` of `model.init`: boxed ShapeDtypeStructs, no allocation."""
  x = jax.ShapeDtypeStruct((batch, num_bins, num_frames), jnp.float32)
  return jax.eval_shape(lambda rng: model.init(rng, jnp.zeros(x.shape, x.dtype)), jax.random.key(0))


__all__ = [
    "VARIANTS", "LOSS_KINDS", "LOGICAL_AXIS_RULES", "logical_axis_rules", "param_shardings",
    "HeadSpec", "ATTENTION_IMPLEMENTATIONS", "PATCH_EMBEDS", "pitch_embed_channels", "PitchEmbed", "EQUIVARIANT_HEADS", "attention_implementation", "ViT1D", "MT2", "EquivariantHead", "ContrastiveHead", "head_specs", "model_dims", "build_model",
    "count_params", "abstract_variables",
]
