"""Where arrays live: the device mesh, the logical-axis rules of the parameters,
and the one batch spec (docs/design.md §2).

Parameters carry logical axis names (mt2_jax/model/layers.py, `logical_init`);
`config.sharding` picks the rules: 'data' replicates them, 'fsdp' splits their
'embed' dimension over the mesh's 'fsdp' axis. The batch is always split over
every device on its leading dimension.
"""

from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp")
BATCH_SPEC = P(MESH_AXES)  # The batch's leading dim over every device of a MESH_AXES mesh.

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


def make_mesh(config, devices=None) -> Mesh:
  """A ('data', 'fsdp') mesh over all devices; `config.mesh.data=-1` takes the rest."""
  devices = list(jax.devices() if devices is None else devices)
  fsdp = int(config.mesh.get("fsdp", 1))
  data = int(config.mesh.get("data", -1))
  if data == -1:
    data = len(devices) // fsdp
  if data * fsdp != len(devices):
    raise ValueError(f"config.mesh: data={config.mesh.data} x fsdp={fsdp} does not match "
                     f"the {len(devices)} devices")
  # Mesh (not jax.make_mesh): auto axis types, so sharding follows the
  # constraints we give and XLA propagates the rest.
  return Mesh(mesh_utils.create_device_mesh((data, fsdp), devices), MESH_AXES)


def single_device_mesh(device=None) -> Mesh:
  """A 1x1 mesh: inference and checkpoint loading on one device."""
  return Mesh(np.array([device or jax.devices()[0]]).reshape(1, 1), MESH_AXES)


def check_batch_divides(batch_size: int, ways: int, over: str) -> None:
  """Raises ValueError naming config.batch_size unless it splits evenly `ways` ways."""
  if batch_size % ways:
    raise ValueError(f"config.batch_size: {batch_size} does not divide over the {ways} {over}")


def batch_spec(mesh: Mesh, pspec: P | None = None) -> P:
  """The batch's PartitionSpec: `pspec` if given, else the leading dim over every mesh axis."""
  return P(tuple(mesh.axis_names)) if pspec is None else pspec


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, batch_spec(mesh))
