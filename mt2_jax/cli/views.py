"""`mt2 views`: one batch of training views, to look at what the model sees.

  mt2 views --config=configs/mt2.py:runlocal --data DATA --out views.npz --png views.png

Writes the first batch of the config's pipeline (same seed, crops and shifts
as step 0 of training, on this process's records) to an .npz with x_a, x_b,
x_a_shift [B, crop_bins, segment_frames] float32 and shift [B], plus what
was drawn: record, epoch, start_a, start_b, offset and track_id. With --png,
a picture of A, B and A' side by side for the first --num tracks, each row
titled with its track and shift. --data overrides config.data_dir.
"""

from typing import Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

from mt2_jax import storage
from mt2_jax.data import pipeline
from mt2_jax.data import views

# allow_override: info and train also have --config, prepare and others --out
# (mt2_jax/cli/__init__.py). lock_config=False: --data sets config.data_dir.
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/mt2.py:runlocal.", lock_config=False,
    allow_override=True)
_DATA = flags.DEFINE_string("data", None, "Prepared dataset (overrides config.data_dir).",
                            allow_override=True)
_OUT = flags.DEFINE_string("out", None, "Output .npz with one batch of views.", allow_override=True)
_PNG = flags.DEFINE_string("png", None, "Optional picture of the views (.png).",
                           allow_override=True)
_NUM = flags.DEFINE_integer("num", 4, "Tracks to draw in the picture.", allow_override=True)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None or not _OUT.value:
    raise app.UsageError(
        "usage: mt2 views --config=CONFIG --out=FILE.npz [--data=DATA] [--png=FILE.png]")
  if _DATA.value:
    config.data_dir = _DATA.value
  batch = views.first_batch(config)
  storage.save_npz(_OUT.value, **batch)
  shapes = ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in batch.items() if k in
                     pipeline.VIEW_KEYS + ("shift", "shift_b"))
  print(f"views: {len(batch['shift'])} tracks -> {_OUT.value} ({shapes})")
  print(f"  shifts: {batch['shift'].tolist()}")
  if _PNG.value:
    views.plot_views(batch, _PNG.value, _NUM.value)
    print(f"  picture of {min(_NUM.value, len(batch['shift']))} tracks -> {_PNG.value}")
