"""ViT-1D with K named class tokens, and the heads the losses are bound to.

Input: a cropped CQT `x` of shape [B, num_bins, T] (84 bins, T <= num_frames).
One token per time frame (a `Linear(num_bins -> d)` of the frame's column),
learned absolute positional embedding on the frame tokens, pre-LayerNorm
blocks, final LayerNorm; K class tokens (learnable vector + mean of the
frames) either prepended to the frames for every block (the paper) or reading
the blocks' output with class-attention blocks of their own (the default,
`model.class_blocks`; docs/design.md §1.3).

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

from mt2_jax.model.backbone import (CLASS_TOKEN_INITS, NUM_PITCH_CLASSES, PATCH_EMBEDS, PitchEmbed,
                                    ViT1D, pitch_embed_channels)
from mt2_jax.model.heads import (EQUIVARIANT_HEADS, LOSS_KINDS, PROJECTORS, ContrastiveHead,
                                 EquivariantHead, HeadSpec)
from mt2_jax.model.layers import (ATTENTION_IMPLEMENTATIONS, LAYERSCALE_TOKENS, EncoderBlock,
                                  ClassAttentionBlock, SelfAttention, attention_implementation)
from mt2_jax.model.mt2 import (MT2, TOKEN_READS, VARIANTS, abstract_variables, build_model,
                              count_params, head_specs, model_dims, shift_view_detached, token_reads)
from mt2_jax.sharding import LOGICAL_AXIS_RULES, logical_axis_rules, param_shardings

__all__ = [
    "ATTENTION_IMPLEMENTATIONS", "CLASS_TOKEN_INITS", "EQUIVARIANT_HEADS", "LAYERSCALE_TOKENS",
    "LOGICAL_AXIS_RULES", "LOSS_KINDS", "MT2", "ClassAttentionBlock",
    "NUM_PITCH_CLASSES", "PATCH_EMBEDS", "PROJECTORS", "TOKEN_READS", "VARIANTS", "ContrastiveHead",
    "EncoderBlock", "EquivariantHead", "HeadSpec", "PitchEmbed", "SelfAttention", "ViT1D",
    "abstract_variables", "attention_implementation", "build_model", "count_params", "head_specs",
    "logical_axis_rules", "model_dims", "param_shardings", "pitch_embed_channels",
    "shift_view_detached", "token_reads",
]
