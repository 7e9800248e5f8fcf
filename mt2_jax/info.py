"""Parameters, FLOPs and outputs of a config: `summarize(config)` (`mt2 info`).

`mt2 info --config=configs/mt2.py[:ARGS]` (mt2_jax/cli/info.py) prints
`format_summary`, then `summarize`'s dict as one line of JSON (the last line
of stdout):

  params, params_backbone, params_heads   counts of float32 scalars
  flops_forward_per_view        one view [1, bins, T] through the backbone
  flops_train_step_per_track    forward + backward of the whole objective for
                                one track (3 views, every head and loss)
  flops_forward_per_view_analytic   2 * multiply-adds of the matmuls and
                                attention, as a cross-check
  flops_source                  'xla_cost_analysis' (from
                                `jit(...).lower(...).compile().cost_analysis()`
                                on this machine's backend) or 'analytic'
  num_frames, num_bins, num_tokens (= K + T), class_tokens, outputs (shapes,
  'B' for the batch)

Nothing of the model's size is allocated: parameters come from
`jax.eval_shape` and compilation uses abstract shapes.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mt2_jax import model as model_lib
from mt2_jax.data import augment
from mt2_jax.train import objective


def _cost_flops(compiled) -> float | None:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older JAX: one dict per program.
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def analytic_forward_flops(width: int, depth: int, mlp_dim: int, num_bins: int, frames: int,
                           num_classes: int, class_blocks: int = 0) -> int:
  """2 x multiply-adds of one view's backbone forward (matmuls and attention only).

  class_blocks (model.class_blocks): 0, the class tokens go through every block
  with the frames; n, the blocks see the frames only and each class token has
  n class-attention blocks (one query over 1 + frames keys).
  """
  length = frames + (0 if class_blocks else num_classes)
  per_block = (
      2 * length * width * 3 * width  # q, k, v
      + 2 * 2 * length * length * width  # q k^T and attention @ v
      + 2 * length * width * width  # output projection
      + 2 * 2 * length * width * mlp_dim)  # MLP
  keys = 1 + frames
  per_class_block = (
      2 * width * width + 2 * keys * width * 2 * width  # q of the token, k and v of every token
      + 2 * 2 * keys * width  # one row of scores, and its weighted sum of values
      + 2 * width * width + 2 * 2 * width * mlp_dim)  # output projection, MLP
  return (2 * frames * num_bins * width + depth * per_block
          + num_classes * class_blocks * per_class_block)


def _abstract_batch(config, tracks: int):
  shape = (tracks, config.data.crop_bins, config.data.segment_frames)
  batch = {key: jax.ShapeDtypeStruct(shape, jnp.float32) for key in objective.VIEWS}
  for key in augment.shift_keys(config.data.get("b_offset", "shared")):
    batch[key] = jax.ShapeDtypeStruct((tracks,), jnp.int32)
  return batch


def summarize(config, compiled_flops: bool = True) -> dict:
  """The facts `mt2 info` reports, as a JSON-able dict."""
  model = model_lib.build_model(config)
  bins, frames = config.data.crop_bins, config.data.segment_frames
  boxed = model_lib.abstract_variables(model, bins, frames)
  params = nn.unbox(boxed["params"])
  backbone = params["backbone"]
  heads = {name: model_lib.count_params(tree) for name, tree in params.items() if name != "backbone"}
  variant = model_lib.model_dims(config)
  class_tokens = list(config.model.class_tokens)

  view = jax.ShapeDtypeStruct((1, bins, frames), jnp.float32)
  shapes = jax.eval_shape(lambda p, x: model.apply({"params": p}, x), params, view)
  outputs = {name: ["B", *s.shape[1:]] for name, s in shapes.items()}

  analytic = analytic_forward_flops(variant["width"], variant["depth"], variant["mlp_dim"], bins, frames,
                                    len(class_tokens), config.model.get("class_blocks", 0))
  info = {
      "variant": config.model.variant,
      **variant,
      "dtype": config.model.dtype,
      "class_tokens": class_tokens,
      "losses": {name: f"{loss.kind} on cls_{loss.token}" for name, loss in sorted(config.losses.items())},
      "num_frames": frames,
      "num_bins": bins,
      "num_tokens": len(class_tokens) + frames,
      "params": model_lib.count_params(params),
      "params_backbone": model_lib.count_params(backbone),
      "params_heads": heads,
      "params_breakdown": {
          "patch_embed": model_lib.count_params(backbone["patch_embed"]),
          "pos_embed": model_lib.count_params(backbone["pos_embed"]),
          "cls": model_lib.count_params(backbone["cls"]),
          "blocks": sum(model_lib.count_params(v) for k, v in backbone.items() if k.startswith("block")),
          "final_norm": model_lib.count_params(backbone["final_norm"]),
      },
      "outputs": outputs,
      "flops_forward_per_view_analytic": analytic,
      "flops_source": "analytic",
      "flops_forward_per_view": analytic,
      "flops_train_step_per_track": None,
  }
  if compiled_flops:
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x, with_heads=False))
    fwd = _cost_flops(forward.lower(params, view).compile())
    loss_fn = objective.make_loss_fn(config, model)
    step = jax.jit(jax.value_and_grad(lambda p, b: loss_fn(p, b, None), has_aux=True))
    train = _cost_flops(step.lower(params, _abstract_batch(config, 1)).compile())
    if fwd is not None and train is not None:
      info.update(flops_source="xla_cost_analysis", flops_forward_per_view=fwd, flops_train_step_per_track=train)
  if info["flops_train_step_per_track"] is None:
    # Backward ~ 2x forward; 3 views per track.
    info["flops_train_step_per_track"] = 3 * 3 * analytic
  return info


def _human(n: float) -> str:
  for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(n) >= scale:
      return f"{n / scale:.2f} {unit}"
  return f"{n:g}"


def format_summary(info: dict) -> str:
  """The human-readable part of `mt2 info`."""
  lines = [
      f"MT2 ViT-1D '{info['variant']}': d={info['width']} depth={info['depth']} heads={info['num_heads']} "
      f"mlp={info['mlp_dim']} activations={info['dtype']} params=float32",
      f"input [B, {info['num_bins']}, T<={info['num_frames']}] -> {info['num_tokens']} tokens "
      f"({len(info['class_tokens'])} class + {info['num_frames']} frames)",
      f"class tokens: {', '.join(info['class_tokens'])}",
      "losses: " + "; ".join(f"{k}: {v}" for k, v in info["losses"].items()),
      f"parameters: {info['params']:,} total, backbone {info['params_backbone']:,}",
  ]
  lines += [f"  {name:<12} {n:>12,}" for name, n in info["params_breakdown"].items()]
  lines += [f"  {name:<12} {n:>12,}" for name, n in info["params_heads"].items()]
  lines.append(f"FLOPs ({info['flops_source']}): forward per view {_human(info['flops_forward_per_view'])}"
               f" (analytic {_human(info['flops_forward_per_view_analytic'])}), "
               f"train step per track (3 views, fwd+bwd) {_human(info['flops_train_step_per_track'])}")
  lines.append("outputs:")
  lines += [f"  {name:<18} {shape}" for name, shape in info["outputs"].items()]
  return "\n".join(lines)

