"""The ViT-1D backbone: [B, num_bins, T] -> named features (docs/design.md §1.3).

One token per CQT frame (dense, pitch-structured or both), K named class
tokens (learnable vector + mean of the frames), pre-LayerNorm blocks, final
LayerNorm. The class tokens either go through the blocks with the frames (the
paper, class_blocks=0) or read the blocks' output frames with class-attention
blocks of their own (CaiT, class_blocks=n; the default, docs/design.md §1.3)."""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mt2_jax.model.layers import ZEROS, ClassAttentionBlock, EncoderBlock, layer_norm, logical_init

from mt2_jax.keys import NUM_PITCH_CLASSES

CLASS_TOKEN_INITS = ("mean", "vector")  # ViT1D.class_token_init.

# ViT1D.token_reads: which channels of the frames a class token reads (the
# config's modes, model.TOKEN_READS, map to these per token: model.token_reads).
READ_CHANNELS = ("all", "pitch", "dense")

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
    w = self.param("kernel", logical_init(nn.initializers.normal(1.0), "pitch_channels"),
                   (self.channels,), jnp.float32)
    b = self.param("bias", logical_init(nn.initializers.normal(1.0), "pitch_channels"),
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
  class_token_init: str = "mean"  # 'mean': learnable vector + frame mean; 'vector': the vector only.
  remat: bool = False
  attention: str = "auto"  # SelfAttention.implementation.
  patch_embed: str = "dense"  # 'dense' (the paper), 'pitch' or 'hybrid' (PitchEmbed + dense).
  pitch_channels: int | None = None  # c of PitchEmbed; None: pitch_embed_channels' default.
  layerscale: float = 0.0  # EncoderBlock.layerscale; 0: no LayerScale (the paper).
  layerscale_tokens: str = "all"  # EncoderBlock.layerscale_tokens.
  # 0: class tokens join the frames at the first block (the paper). n > 0: the
  # blocks see the frames only, then each class token reads their output with
  # n ClassAttentionBlocks of its own (CaiT), so the tokens are two features.
  class_blocks: int = 0
  # Class tokens whose class blocks read stop_gradient(frames) (on the rows
  # `detach_rows` flags; all rows without it): their losses then train their
  # own class blocks there, not the blocks shared with the other tokens (only
  # the final LayerNorm's scale and bias stay shared).
  detached_tokens: tuple[str, ...] = ()
  # With class_blocks, one of READ_CHANNELS per class token (empty: 'all' for
  # each): the channels of the blocks' output frames its class blocks read,
  # the pitch-structured ones (the first 12c, as _embed_frames lays them out)
  # or the dense rest; the others are zeroed. LayerScale keeps the blocks
  # near the identity, so the layout of the frame embedding survives them.
  token_reads: tuple[str, ...] = ()

  @nn.compact
  def __call__(self, x, *, train: bool = False, detach_rows=None):
    """x: [B, bins, T]; detach_rows: bool [B] or None (see detached_tokens)."""
    batch, _, frames = x.shape
    if frames > self.num_frames:
      raise ValueError(
          f"input has {frames} frames but the model was built for at most num_frames="
          f"{self.num_frames} (config.data.segment_frames); embed longer audio in windows")
    num_classes = len(self.class_tokens)

    # One token per frame: the frame's column of bins, projected to d.
    x = jnp.swapaxes(x, 1, 2).astype(self.dtype)  # [B, T, bins]
    frames_btd = self._embed_frames(x)
    if not self.class_blocks:  # Before the position embedding (_class_tokens).
      cls_bkd = self._class_tokens(batch, frames_btd)

    # Position embedding on frame tokens only: class tokens are told apart by
    # their own learnable vector already, so a position for them would be a
    # second, redundant bias; and the table's shape does not depend on K, so
    # models with different numbers of tokens share everything else.
    posemb = self.param(
        "pos_embed", logical_init(nn.initializers.normal(0.02), "frames", "embed"),
        (self.num_frames, self.width), jnp.float32)
    frames_btd = frames_btd + posemb[:frames].astype(self.dtype)[None]

    if self.class_blocks:  # The blocks see frames only; the class tokens come after them.
      if self.class_token_attention != "full":
        raise ValueError("class_token_attention restricts class tokens inside the blocks; with "
                         "class_blocks they are not there, so leave it 'full'")
      h, mask, in_blocks = frames_btd, None, 0
    else:
      h = jnp.concatenate([cls_bkd, frames_btd], axis=1)  # [B, K + T, d]
      mask, in_blocks = self._attention_mask(num_classes, frames), num_classes

    block = nn.remat(EncoderBlock, static_argnums=(3,)) if self.remat else EncoderBlock
    for i in range(self.depth):
      h = block(self.num_heads, self.mlp_dim, dtype=self.dtype, dropout=self.dropout,
                attention=self.attention, layerscale=self.layerscale,
                layerscale_tokens=self.layerscale_tokens, num_class_tokens=in_blocks,
                name=f"block{i:02d}")(h, mask, train)

    if self.class_blocks:  # Each class token reads the blocks' output frames h [B, T, d].
      cls_bkd = self._class_tokens(batch, None)  # The vectors; + the mean of what each reads.
      tokens = []
      for k, name in enumerate(self.class_tokens):
        mask = self._read_mask(k)
        read = h if mask is None else h * mask  # What this token's class blocks read.
        if name in self.detached_tokens:
          if detach_rows is None:
            read = jax.lax.stop_gradient(read)
          else:
            rows = jnp.asarray(detach_rows, bool)[:, None, None]
            read = jnp.where(rows, jax.lax.stop_gradient(read), read)
        c = cls_bkd[:, k:k + 1]
        if self.class_token_init == "mean":
          c = c + jnp.mean(read, axis=1, keepdims=True)
        for j in range(self.class_blocks):
          c = ClassAttentionBlock(self.num_heads, self.mlp_dim, dtype=self.dtype,
                                  dropout=self.dropout, name=f"cls_{name}_block{j:02d}")(c, read, train)
        tokens.append(c)
      h = jnp.concatenate(tokens + [h], axis=1)
    h = layer_norm("final_norm", self.dtype)(h)

    out = {f"cls_{name}": h[:, i] for i, name in enumerate(self.class_tokens)}
    out["cls_mean"] = jnp.mean(h[:, :num_classes], axis=1)
    out["tokens"] = h[:, num_classes:]
    out["tokens_mean"] = jnp.mean(out["tokens"], axis=1)
    return out

  def _class_tokens(self, batch: int, frames_btd):
    """[B, K, d]: each token's learnable vector (+ with 'mean', the mean of
    `frames_btd`: the projected frames before the position embedding, so that
    it does not depend on where a window sits in the table; None: the vectors
    alone, for the class blocks to add the mean of what each reads)."""
    cls_vectors = self.param(
        "cls", logical_init(nn.initializers.normal(0.02), "classes", "embed"),
        (len(self.class_tokens), self.width), jnp.float32)
    cls_bkd = jnp.broadcast_to(cls_vectors.astype(self.dtype)[None],
                               (batch, len(self.class_tokens), self.width))
    if self.class_token_init == "mean" and frames_btd is not None:
      return cls_bkd + jnp.mean(frames_btd, axis=1, keepdims=True)  # + frame mean [B, 1, d]
    if self.class_token_init not in CLASS_TOKEN_INITS:
      raise ValueError(f"class_token_init must be one of {CLASS_TOKEN_INITS}, "
                       f"got {self.class_token_init!r}")
    return cls_bkd

  def _read_mask(self, k: int):
    """[d] 0/1, or None for all: the channels class token k reads (token_reads)."""
    reads = self.token_reads[k] if self.token_reads else "all"
    if reads == "all":
      return None
    if reads not in READ_CHANNELS:
      raise ValueError(f"token_reads must hold values of {READ_CHANNELS}, got {reads!r}")
    pitch_width = NUM_PITCH_CLASSES * pitch_embed_channels(
        self.patch_embed, self.width, self.pitch_channels)
    if not 0 < pitch_width < self.width:
      raise ValueError(f"token_reads {reads!r} needs both pitch-structured and dense channels "
                       f"(patch_embed 'hybrid'), have {pitch_width} of {self.width} pitch channels")
    is_pitch = jnp.arange(self.width) < pitch_width
    return (is_pitch if reads == "pitch" else ~is_pitch).astype(self.dtype)

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
          kernel_init=logical_init(nn.initializers.lecun_normal(), "bins", "embed"),
          bias_init=logical_init(ZEROS, "embed"))(x_btk))
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
