r"""mt2 train --config=configs/equivariant_only.py --workdir=/tmp/equivariant_only

Ablation: ViT-1D with one class token trained by CPSD alone (STONE's objective
on the paper's equivariant-only baseline). Everything else as configs/mt2.py.
"""

from mt2_jax import config_defaults


def get_config(arg=None):
  config = config_defaults.base_config()
  config.model.class_tokens = ("equivariant",)
  del config.losses["ntxent"]
  return config_defaults.apply_arg(config, arg)
