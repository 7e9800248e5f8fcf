"""Orbax checkpoints of a run: train state and data-iterator position together.

`DIR/checkpoints/<step>/state` holds the TrainState (params, optimizer state,
step, rng) and `DIR/checkpoints/<step>/data` the Grain iterator state of every
process, so a resumed run sees exactly the batches it would have seen.
`DIR/config.json` is the config the run was started with; `load_run` turns a
workdir into (config, params) for inference.
"""

import json
from typing import Any

from etils import epath
import ml_collections
import orbax.checkpoint as ocp

from mt2_jax import storage


def checkpoint_dir(workdir) -> epath.Path:
  return storage.path(workdir) / "checkpoints"


class Checkpointer:
  """A thin CheckpointManager over the items 'state' and (optionally) 'data'."""

  def __init__(self, workdir, max_to_keep: int = 3):
    import grain
    # Synchronous saves: the data-iterator state must be the one at the step
    # saved, and a preempted process must not exit with a save in flight.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(
        checkpoint_dir(workdir), options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, data_iterator=None) -> None:
    import grain
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)
    self.manager.wait_until_finished()

  def restore(self, step: int, abstract_state: Any, data_iterator=None) -> Any:
    """Restores into `abstract_state`'s shardings (any device count)."""
    import grain
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    return self.manager.restore(step, args=ocp.args.Composite(**items)).state

  def close(self) -> None:
    self.manager.close()


def save_config(workdir, config: ml_collections.ConfigDict) -> None:
  storage.write_text(storage.path(workdir) / "config.json", config.to_json(indent=2))


def load_config(workdir) -> ml_collections.ConfigDict:
  path = storage.path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{workdir} is not a training run: no config.json "
                            f"(it is written by `mt2 train --workdir={workdir}`).")
  config = ml_collections.ConfigDict(json.loads(path.read_text()))
  config.model.class_tokens = tuple(config.model.class_tokens)  # JSON made it a list.
  return config


# Keys added after runs were saved, with the value that does what their absence
# did: an old run missing one is not changed by its default.
ADDED_KEYS = {"data.group_pattern": "", "losses.ntxent.pairs": "all", "data.b_offset": "shared",
              "model.token_reads": "all"}


def config_changes(old, new, ignore=()) -> list[str]:
  """['optim.lr: 0.001 -> 0.002', ...]: the keys whose values differ between two
  configs (read as JSON, so tuples and lists compare equal), except `ignore`
  and ADDED_KEYS at their neutral value."""
  def flat(config, prefix=""):
    for key, value in config.items():
      if isinstance(value, dict):
        yield from flat(value, f"{prefix}{key}.")
      else:
        yield f"{prefix}{key}", value
  a, b = (dict(flat(json.loads(c.to_json()))) for c in (old, new))
  for config in (a, b):
    for key, neutral in ADDED_KEYS.items():
      config.setdefault(key, neutral)
  return [f"{k}: {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}"
          for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k) and k not in ignore]


def load_run(workdir, step: int | None = None):
  """(config, params, step) of a run's latest (or given) checkpoint, on one device.

  params is the float32 'params' tree that `build_model(config).apply` takes.
  Only the parameters are read (Orbax partial restore): inference builds no
  optimizer and reads none of its state, so it works whatever optimizer the
  run was trained with.
  """
  import jax
  import flax.linen as nn
  from mt2_jax import model as model_lib
  from mt2_jax import sharding
  config = load_config(workdir)
  ckpt = Checkpointer(workdir)
  step = ckpt.latest_step() if step is None else step
  ckpt.close()
  if step is None:
    raise FileNotFoundError(f"{workdir} has no checkpoint yet (checkpoints/ is empty).")
  model = model_lib.build_model(config)
  boxed = model_lib.abstract_variables(model, config.data.crop_bins, config.data.segment_frames)
  device = jax.sharding.NamedSharding(sharding.single_device_mesh(), jax.sharding.PartitionSpec())
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                          nn.unbox(boxed)["params"])
  target = {"params": abstract}
  restored = ocp.Checkpointer(ocp.PyTreeCheckpointHandler()).restore(
      checkpoint_dir(workdir) / str(step) / "state",
      args=ocp.args.PyTreeRestore(item=target, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(target)))
  return config, restored["params"], step
