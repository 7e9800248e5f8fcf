"""Building blocks of the ViT-1D: initialisers with logical axes, LayerNorm,
the MLP, multi-head self-attention (XLA einsums or cuDNN), the encoder block."""

import functools
import logging
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def logical_init(initializer, *axes):
  return nn.with_logical_partitioning(initializer, axes)


DENSE_INIT = nn.initializers.xavier_uniform()
ONES = nn.initializers.ones
ZEROS = nn.initializers.zeros


def layer_norm(name: str, dtype) -> nn.LayerNorm:
  return nn.LayerNorm(
      name=name, dtype=dtype, param_dtype=jnp.float32,
      scale_init=logical_init(ONES, "embed"), bias_init=logical_init(ZEROS, "embed"))



class MlpBlock(nn.Module):
  """Linear(d -> mlp_dim), GELU, Linear(mlp_dim -> d)."""
  mlp_dim: int
  dtype: Any = jnp.float32
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, *, train: bool):
    d = x.shape[-1]
    h = nn.Dense(self.mlp_dim, dtype=self.dtype, param_dtype=jnp.float32, name="fc1",
                 kernel_init=logical_init(DENSE_INIT, "embed", "mlp"),
                 bias_init=logical_init(ZEROS, "mlp"))(x)
    h = nn.gelu(h)
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return nn.Dense(d, dtype=self.dtype, param_dtype=jnp.float32, name="fc2",
                    kernel_init=logical_init(DENSE_INIT, "mlp", "embed"),
                    bias_init=logical_init(ZEROS, "embed"))(h)


ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn")
LAYERSCALE_TOKENS = ("all", "frames")  # EncoderBlock.layerscale_tokens.


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
    kernel = self.param("kernel", logical_init(DENSE_INIT, *self.kernel_axes), self.kernel_shape,
                        jnp.float32)
    bias_shape = self.kernel_shape[-len(self.bias_axes):]
    bias = self.param("bias", logical_init(ZEROS, *self.bias_axes), bias_shape, jnp.float32)
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
    gamma = self.param(name, logical_init(nn.initializers.constant(self.layerscale), "embed"),
                       (h.shape[-1],), jnp.float32).astype(h.dtype)
    if self.layerscale_tokens == "frames":
      is_cls = (jnp.arange(h.shape[1]) < self.num_class_tokens)[:, None]  # [L, 1]
      return h * jnp.where(is_cls, jnp.ones_like(gamma), gamma)
    return h * gamma

  @nn.compact
  def __call__(self, x, mask=None, train: bool = False):
    # `train` is positional so that nn.remat can treat it as static (argnum 3).
    h = layer_norm("ln1", self.dtype)(x)
    h = SelfAttention(self.num_heads, dtype=self.dtype, implementation=self.attention,
                      name="attn")(h, mask)
    x = x + nn.Dropout(self.dropout, deterministic=not train)(self._scale("ls1", h))
    h = layer_norm("ln2", self.dtype)(x)
    h = MlpBlock(self.mlp_dim, dtype=self.dtype, dropout=self.dropout, name="mlp")(h, train=train)
    return x + nn.Dropout(self.dropout, deterministic=not train)(self._scale("ls2", h))


class ClassAttentionBlock(nn.Module):
  """One class token reads the frames with its own weights (CaiT's class attention).

  x_cls + MHA(q = LN(x_cls), k = v = LN([x_cls; frames])), then + MLP(LN(.)).
  The frames are not updated. Each class token gets its own stack of these
  (ViT1D.class_blocks), so the tokens are different functions of the same
  frames rather than one shared readout plus a per-token offset.
  """
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32
  dropout: float = 0.0

  @nn.compact
  def __call__(self, cls_b1d, frames_btd, train: bool = False):
    """cls_b1d: [B, 1, d]; frames_btd: [B, T, d]. -> [B, 1, d]."""
    d = cls_b1d.shape[-1]
    n, h = self.num_heads, d // self.num_heads
    u = layer_norm("ln1", self.dtype)(jnp.concatenate([cls_b1d, frames_btd], axis=1))  # [B, 1 + T, d]
    q = _Einsum("bld,dnh->bnlh", kernel_shape=(d, n, h), kernel_axes=("embed", "heads", "kv"),
                bias_axes=("heads", "kv"), bias_broadcast=(None, slice(None), None, slice(None)),
                dtype=self.dtype, name="q")(u[:, :1])
    kv = _Einsum("bld,dsnh->sbnlh", kernel_shape=(d, 2, n, h),
                 kernel_axes=("embed", "qkv", "heads", "kv"), bias_axes=("qkv", "heads", "kv"),
                 bias_broadcast=(slice(None), None, slice(None), None), dtype=self.dtype,
                 name="kv")(u)
    scores = jnp.einsum("bnlh,bnmh->bnlm", q * jnp.asarray(h ** -0.5, self.dtype), kv[0])
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(self.dtype)
    o = jnp.einsum("bnlm,bnmh->bnlh", probs, kv[1])
    o = _Einsum("bnlh,nhd->bld", kernel_shape=(n, h, d), kernel_axes=("heads", "kv", "embed"),
                bias_axes=("embed",), bias_broadcast=(None, None), dtype=self.dtype, name="out")(o)
    x = cls_b1d + nn.Dropout(self.dropout, deterministic=not train)(o)
    y = MlpBlock(self.mlp_dim, dtype=self.dtype, dropout=self.dropout, name="mlp")(
        layer_norm("ln2", self.dtype)(x), train=train)
    return x + nn.Dropout(self.dropout, deterministic=not train)(y)
