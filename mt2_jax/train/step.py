"""The jitted, sharded train step and the state it updates.

Everything here is pure: `create_train_state` and `make_train_step` are
factories that tests call on a toy config; `train.py` owns the side effects.

Shardings are explicit: parameters and optimizer state follow the logical
axis names of the model through `config.sharding` ('data': replicated,
'fsdp': the 'embed' dimension over the mesh's 'fsdp' axis); the batch is split
over all devices on its leading dimension; the state is donated.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mt2_jax import config_validation
from mt2_jax import model as model_lib
from mt2_jax import sharding
from mt2_jax.data import augment
from mt2_jax.train import objective

class TrainState(struct.PyTreeNode):
  step: jax.Array      # int32 scalar
  params: Any          # float32, unboxed
  opt_state: Any
  rng: jax.Array       # uint32[2] raw key: the model's rng is fold_in(rng, step)


def tokens_per_track(config) -> int:
  """Tokens a track puts through the model in a step: 3 views of K + T."""
  return 3 * (len(config.model.class_tokens) + config.data.segment_frames)


def learning_rate_schedule(config) -> optax.Schedule:
  o = config.optim
  warmup = min(int(o.warmup_steps), max(int(config.total_steps) - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=o.lr, warmup_steps=warmup,
      decay_steps=max(int(config.total_steps), warmup + 1), end_value=o.end_lr)


def _decay_mask(params) -> Any:
  """Weight decay on weight matrices only: not biases, norms, tokens or positions."""
  def decays(path, leaf):
    name = getattr(path[-1], "key", str(path[-1]))
    return leaf.ndim >= 2 and name == "kernel"
  return jax.tree_util.tree_map_with_path(decays, params)


def part_scales(config) -> dict[str, float]:
  """{parameter path prefix: learning-rate factor} of `losses.<name>.lr_scale` and
  `optim.lr_scale` (docs/design.md §1.5).

  A loss's factor covers its head (`head_<name>`) and its token's own class
  blocks (`backbone/cls_<token>_blockNN`); what the tokens share keeps the base
  rate. `optim.lr_scale` names prefixes directly and wins where both name one.
  """
  scales = {}
  for name, loss in config.losses.items():
    factor = float(loss.get("lr_scale", 1.0))
    if factor != 1.0:
      scales[f"head_{name}"] = factor
      for j in range(int(config.model.get("class_blocks", 0))):
        scales.setdefault(f"backbone/cls_{loss.token}_block{j:02d}", factor)
  scales.update(config_validation.parse_lr_scale(config.optim.get("lr_scale", "")))
  return scales


def _with_scales(tx: optax.GradientTransformation, scales: dict[str, float]):
  """tx whose updates are multiplied per leaf by the factor of the first prefix
  its path starts with. Its state is tx's own, so a run's optimizer state keeps
  its structure whether or not parts have their own rate."""
  name = lambda path: "/".join(str(getattr(k, "key", k)) for k in path)
  under = lambda n, prefix: n == prefix or n.startswith(prefix + "/")

  def update(updates, state, params=None):
    names = [name(path) for path, _ in jax.tree_util.tree_flatten_with_path(updates)[0]]
    unmatched = [p for p in scales if not any(under(n, p) for n in names)]
    if unmatched:  # At trace time, before the first step.
      raise ValueError(f"optim.lr_scale: no parameter path starts with {unmatched}; e.g. "
                       f"{names[:3]}")
    updates, state = tx.update(updates, state, params)
    return jax.tree_util.tree_map_with_path(
        lambda path, u: u * next((f for p, f in scales.items() if under(name(path), p)), 1.0),
        updates), state
  return optax.GradientTransformation(tx.init, update)


def make_optimizer(config) -> optax.GradientTransformation:
  """AdamW with warm-up + cosine decay and global-norm clipping, and a learning
  rate per part where one is set (`part_scales`; docs/design.md §1.5)."""
  o = config.optim
  tx = optax.chain(optax.clip_by_global_norm(o.grad_clip),
                   optax.adamw(learning_rate_schedule(config), b1=o.b1, b2=o.b2,
                               weight_decay=o.weight_decay, mask=_decay_mask))
  scales = part_scales(config)
  return _with_scales(tx, scales) if scales else tx


def _dummy_input(config, batch: int = 1) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct((batch, config.data.crop_bins, config.data.segment_frames), jnp.float32)


def state_shardings(config, model, tx, mesh: Mesh) -> TrainState:
  """NamedShardings for every leaf of the TrainState, without allocating it."""
  boxed = model_lib.abstract_variables(model, config.data.crop_bins, config.data.segment_frames)
  param_sh = model_lib.param_shardings(boxed, mesh, config.sharding)["params"]
  abstract_params = nn.unbox(boxed)["params"]
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  replicated = NamedSharding(mesh, P())
  # Moments mirror the parameters; counts and the like are replicated.
  opt_sh = optax.tree_map_params(
      tx, lambda _, sh: sh, abstract_opt, param_sh,
      transform_non_params=lambda _: replicated)
  return TrainState(step=replicated, params=param_sh, opt_state=opt_sh, rng=replicated)


def _init_state(config, model, tx, seed) -> TrainState:
  key = jax.random.PRNGKey(seed)
  init_key, train_key = jax.random.split(key)
  x = jnp.zeros(_dummy_input(config).shape, jnp.float32)
  params = nn.unbox(model.init(init_key, x))["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params), rng=train_key)


def create_train_state(config, model, tx, mesh: Mesh) -> TrainState:
  """Initialises the state from `config.seed`, directly in its shardings."""
  init = lambda seed: _init_state(config, model, tx, seed)
  with jax.set_mesh(mesh):
    return jax.jit(init, out_shardings=state_shardings(config, model, tx, mesh))(config.seed)


def abstract_train_state(config, model, tx, mesh: Mesh) -> TrainState:
  """ShapeDtypeStructs with shardings: the target a checkpoint restores into."""
  abstract = jax.eval_shape(lambda: _init_state(config, model, tx, config.seed))
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, state_shardings(config, model, tx, mesh))


def make_train_step(config, model, tx, mesh: Mesh) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """`train_step(state, batch) -> (state, metrics)`, jitted with explicit shardings.

  batch: `x_a`, `x_b`, `x_a_shift` [B, bins, T] and `shift` int32 [B], global
  arrays sharded over all devices (B = config.batch_size). metrics: float32
  scalars, replicated: `loss`, each loss term and its aux, `grad_norm`,
  `param_norm`, `lr`.
  """
  loss_fn = objective.make_loss_fn(config, model)
  schedule = learning_rate_schedule(config)
  rules = model_lib.logical_axis_rules(config.sharding)

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(state.rng, state.step)
    with nn.logical_axis_rules(rules):
      (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["param_norm"] = optax.tree.norm(params)
    metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  state_sh = state_shardings(config, model, tx, mesh)
  replicated = NamedSharding(mesh, P())
  jitted = jax.jit(step, in_shardings=(state_sh, sharding.batch_sharding(mesh)),
                   out_shardings=(state_sh, replicated), donate_argnums=(0,))

  def train_step(state, batch):
    with jax.set_mesh(mesh):
      return jitted(state, batch)

  train_step.jitted = jitted  # For lowering / cost analysis in benchmarks and `mt2 info`.
  return train_step


def synthetic_batch(config, mesh: Mesh | None = None, seed: int = 0) -> dict:
  """A random batch of the right shapes (benchmarks, compilation checks)."""
  rng = np.random.default_rng(seed)
  shape = (config.batch_size, config.data.crop_bins, config.data.segment_frames)
  batch = {k: rng.random(shape, np.float32) for k in objective.VIEWS}
  batch["shift"] = augment.draw_shifts(rng, config.batch_size, config.data.max_offset)
  if config.data.get("b_offset", "shared") == "own":
    m = config.data.max_offset
    batch["shift_b"] = (rng.integers(1, m + 1, config.batch_size)
                        - rng.integers(1, m + 1, config.batch_size)).astype(np.int32)
  if mesh is not None:
    batch = jax.device_put(batch, sharding.batch_sharding(mesh))
  return batch
