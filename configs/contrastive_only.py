r"""mt2 train --config=configs/contrastive_only.py --workdir=/tmp/contrastive_only

Ablation: ViT-1D with one class token trained by NT-Xent alone (the paper's
contrastive-only baseline). Everything else as configs/mt2.py.
"""

from mt2_jax import config_defaults


def get_config(arg=None):
  config = config_defaults.base_config()
  config.model.class_tokens = ("contrastive",)
  del config.losses["cpsd"]
  return config_defaults.apply_arg(config, arg)
