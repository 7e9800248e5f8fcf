r"""mt2 train --config=configs/mt2.py --workdir=/tmp/mt2

MT2 as in the paper: ViT-1D tiny over 15-s CQT windows (646 frames), two
class tokens, CPSD on the circle of fifths bound to `equivariant` and NT-Xent
(temperature 0.1) bound to `contrastive`, weights 1:1.

Presets and overrides go after the colon: `configs/mt2.py:runlocal` shrinks the
run to CPU size, `configs/mt2.py:runlocal,variant=small` keeps the small model.
"""

from mt2_jax import config_defaults


def get_config(arg=None):
  config = config_defaults.base_config()
  return config_defaults.apply_arg(config, arg)
