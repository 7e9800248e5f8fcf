"""The MT2 objective: one forward pass over the 3 views, then each configured loss.

`make_loss_fn(config, model)` gives a pure
`loss_fn(params, batch, rng) -> (total_loss, metrics)` for
`jax.value_and_grad(loss_fn, has_aux=True)` inside the jitted train step.
Losses are looked up by `kind` in `LOSSES`; each reads the head of the same
name (`head_<loss name>`), which the model binds to a class token.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

from mt2_jax import losses
from mt2_jax import model as model_lib
from mt2_jax.data.augment import VIEW_KEYS as VIEWS  # Their one home: the views are made there.

build_model = model_lib.build_model


def _cpsd_term(cfg, head_a, head_b, head_shift, batch):
  """CPSD, plus `spread_weight` x the anti-collapse hinge (reported as aux `cpsd_hinge`)."""
  omega = cfg.get("omega", 7 / 12)
  value, aux = losses.cpsd(head_a, head_b, head_shift, batch["shift"], omega=omega,
                           shift_b=batch.get("shift_b"))
  weight = cfg.get("spread_weight", 0.0)
  if not weight:
    return value, aux
  hinge = losses.circle_spread_hinge(losses.all_views(head_a, head_b, head_shift), omega,
                                     cfg.get("spread_target", 0.5))
  return value, {**aux, "cpsd_hinge": hinge, "extra_loss": weight * hinge}


def _ntxent_term(cfg, head_a, head_b, head_shift, batch):
  del batch
  heads = (head_a, head_b, head_shift) if cfg.get("include_shift_view", False) else (head_a, head_b)
  views, pairs = losses.NTXENT_PAIRS[cfg.get("pairs", "all")]
  z = heads if views is None else tuple(heads[i] for i in views)
  return losses.nt_xent(z[0], z[1], temperature=cfg.get("temperature", 0.1), extra_views=z[2:],
                        pairs=pairs)


# kind -> fn(loss config, head of A, of B, of A', batch) -> (loss, aux).
LOSSES: dict[str, Callable[..., tuple[jax.Array, dict[str, jax.Array]]]] = {
    "cpsd": _cpsd_term,
    "ntxent": _ntxent_term,
}


def _metric_name(loss_name: str, kind: str, aux_key: str) -> str:
  """'cpsd_pos' of loss 'cpsd_semitone' -> 'cpsd_semitone_pos'."""
  return loss_name + aux_key[len(kind):] if aux_key.startswith(kind) else f"{loss_name}_{aux_key}"


def make_loss_fn(config, model: model_lib.MT2) -> Callable[..., tuple[jax.Array, dict[str, Any]]]:
  """Builds `loss_fn(params, batch, rng) -> (total_loss, metrics)`.

  Args:
    config: the experiment ConfigDict (`config.losses` is read here).
    model: the module from `build_model(config)`.

  The returned function takes
    params: the 'params' collection of `model.init` (boxed or unboxed);
    batch: dict with `x_a`, `x_b`, `x_a_shift` float [B, 84, T], `shift`
      int32 [B] and, with data.b_offset='own', `shift_b` int32 [B];
    rng: a PRNG key for dropout (e.g. `fold_in(seed_key, step)`), or None;
  and returns the float32 total = sum(weight * loss) and a flat metrics dict:
  `loss`, each loss by name, and each loss's aux (renamed after the loss, e.g.
  `cpsd_pos`, `ntxent_acc`).
  """
  specs = {name: config.losses[name] for name in sorted(config.losses)}
  detach_shift = model_lib.shift_view_detached(config)
  for name, cfg in specs.items():
    if cfg.kind not in LOSSES:
      raise ValueError(f"config.losses.{name}.kind: unknown {cfg.kind!r}; known: {sorted(LOSSES)}")

  def loss_fn(params, batch, rng=None):
    views = [batch[key] for key in VIEWS]
    b = views[0].shape[0]
    # One forward pass over the 3 views rather than three, the views of a
    # track side by side ([B, 3, bins, T] -> [3B, bins, T]): a device's rows
    # then stay on it, where [A; B; A'] would move rows between devices.
    x = jnp.stack(views, axis=1).reshape((3 * b,) + views[0].shape[1:])
    rngs = {"dropout": rng} if rng is not None else {}
    # Rows of A' (every third): read through a stop-gradient by detached tokens.
    detach_rows = jnp.tile(jnp.array([False, False, True]), b) if detach_shift else None
    out = model.apply({"params": params}, x, train=True, rngs=rngs, detach_rows=detach_rows)
    total = jnp.zeros((), jnp.float32)
    metrics = {}
    for name, cfg in specs.items():
      head = out[f"head_{name}"]
      head = head.reshape((b, 3) + head.shape[1:])
      value, aux = LOSSES[cfg.kind](cfg, head[:, 0], head[:, 1], head[:, 2], batch)
      # `extra_loss` (a regulariser) counts in the total but not in the loss's own metric.
      total = total + cfg.get("weight", 1.0) * value + aux.pop("extra_loss", 0.0)
      metrics[name] = value
      metrics.update({_metric_name(name, cfg.kind, k): v for k, v in aux.items()})
    metrics["loss"] = total
    return total, metrics

  return loss_fn
