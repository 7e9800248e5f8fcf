"""The heads the losses are bound to: equivariant (a 12-class profile) and
contrastive (the token or an MLP projection), both in float32."""

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mt2_jax.model.backbone import NUM_PITCH_CLASSES
from mt2_jax.model.layers import DENSE_INIT, ZEROS, logical_init

# Loss kinds: 'cpsd' gets an EquivariantHead, 'ntxent' a ContrastiveHead.
LOSS_KINDS = ("cpsd", "ntxent")
PROJECTORS = ("none", "mlp")


class HeadSpec(NamedTuple):
  """One loss's head: `head_<name>` reads `cls_<token>`."""
  name: str
  kind: str  # 'cpsd' -> equivariant head; 'ntxent' -> contrastive head.
  token: str
  projector: str = "none"
  projector_dim: int = 128
  projector_hidden: int = 1024
  head: str = "dense"  # 'cpsd' only: EquivariantHead.readout.



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
      w = self.param("shared", logical_init(nn.initializers.normal(c ** -0.5), "pitch_channels"), (c,),
                     jnp.float32)
      return jax.nn.softmax(h @ w, axis=-1)
    if self.readout != "dense":
      raise ValueError(f"equivariant head must be one of {EQUIVARIANT_HEADS}, got {self.readout!r}")
    logits = nn.Dense(
        NUM_PITCH_CLASSES, dtype=jnp.float32, param_dtype=jnp.float32, name="dense",
        kernel_init=logical_init(DENSE_INIT, "embed", "pitch"),
        bias_init=logical_init(ZEROS, "pitch"))(feature_bd.astype(jnp.float32))
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
                 kernel_init=logical_init(DENSE_INIT, "embed", "proj_hidden"),
                 bias_init=logical_init(ZEROS, "proj_hidden"))(z)
    z = nn.gelu(z)
    return nn.Dense(self.projector_dim, dtype=jnp.float32, param_dtype=jnp.float32, name="fc2",
                    kernel_init=logical_init(DENSE_INIT, "proj_hidden", "proj"),
                    bias_init=logical_init(ZEROS, "proj"))(z)
