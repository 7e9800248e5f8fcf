"""`mt2 views`: one batch of training views, to look at what the model sees.

  mt2 views --config=configs/mt2.py:runlocal --data DATA --out views.npz --png views.png

Writes the first batch of the config's pipeline (same seed, crops and shifts
as step 0 of training, on this process's records) to an .npz with x_a, x_b,
x_a_shift [B, crop_bins, segment_frames] float32 and shift [B], plus what
was drawn: record, epoch, start_a, start_b, offset and track_id. With --png,
a picture of A, B and A' side by side for the first --num tracks, each row
titled with its track and shift. --data overrides config.data_dir.
"""

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

from mt2_jax.data import pipeline


def _define(define, name, default, help_, **kwargs):
  # Other subcommands share names (--out, --data): a process importing several
  # (tests, the demo) reuses the first definition, and ours may be overridden,
  # in either import order. Values are read by name.
  if name not in flags.FLAGS:
    define(name, default, help_, allow_override=True, **kwargs)


if "config" not in flags.FLAGS:
  config_flags.DEFINE_config_file(
      "config", None, "Experiment config file, e.g. configs/mt2.py:runlocal.", lock_config=False)
_define(flags.DEFINE_string, "data", None, "Prepared dataset (overrides config.data_dir).")
_define(flags.DEFINE_string, "out", None, "Output .npz with one batch of views.")
_define(flags.DEFINE_string, "png", None, "Optional picture of the views (.png).")
_define(flags.DEFINE_integer, "num", 4, "Tracks to draw in the picture.")
FLAGS = flags.FLAGS


def first_batch(config) -> dict[str, np.ndarray]:
  """The pipeline's first host-local batch with the debug keys, as numpy."""
  it = pipeline.make_iterator(config, debug=True, num_workers=0)
  try:
    batch = next(it)
  finally:
    it.close()
  # bfloat16 has no numpy-native dtype: store what any reader can open.
  return {k: (np.asarray(v, np.float32) if k in pipeline.VIEW_KEYS else np.asarray(v))
          for k, v in batch.items()}


def plot_views(batch, path, num: int = 4) -> None:
  """A, B and A' of the first `num` tracks side by side, low bins at the bottom."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  num = max(1, min(num, len(batch["shift"])))
  fig, axes = plt.subplots(num, 3, figsize=(12, 2.6 * num), squeeze=False)
  vmin = min(float(batch[k][:num].min()) for k in pipeline.VIEW_KEYS)
  vmax = max(float(batch[k][:num].max()) for k in pipeline.VIEW_KEYS)
  for i in range(num):
    track = batch["track_id"][i].decode() if "track_id" in batch else f"#{i}"
    o, d = int(batch["offset"][i]), int(batch["shift"][i])
    bins, frames = batch["x_a"].shape[1:]
    sa, sb = int(batch["start_a"][i]), int(batch["start_b"][i])
    names = {"x_a": f"A: bins [{o}, {o + bins}), frames [{sa}, {sa + frames})",
             "x_b": f"B: bins [{o}, {o + bins}), frames [{sb}, {sb + frames})",
             "x_a_shift": f"A': bins [{o + d}, {o + d + bins}), frames of A"}
    for j, key in enumerate(pipeline.VIEW_KEYS):
      ax = axes[i, j]
      ax.imshow(batch[key][i], origin="lower", aspect="auto", vmin=vmin, vmax=vmax,
                cmap="magma", interpolation="nearest")
      ax.set_title(names[key], fontsize=9)
      ax.set_xlabel("frame", fontsize=8)
      if j == 0:
        ax.set_ylabel("bin", fontsize=8)
    axes[i, 1].text(0.5, 1.25, f"{track}   shift d = {d:+d}", transform=axes[i, 1].transAxes,
                    ha="center", fontsize=10, weight="bold")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = FLAGS.config
  if config is None or not FLAGS.out:
    raise app.UsageError(
        "usage: mt2 views --config=CONFIG --out=FILE.npz [--data=DATA] [--png=FILE.png]")
  if FLAGS.data:
    config.data_dir = FLAGS.data
  batch = first_batch(config)
  np.savez(FLAGS.out, **batch)
  shapes = ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in batch.items() if k in
                     pipeline.VIEW_KEYS + ("shift",))
  print(f"views: {len(batch['shift'])} tracks -> {FLAGS.out} ({shapes})")
  print(f"  shifts: {batch['shift'].tolist()}")
  if FLAGS.png:
    plot_views(batch, FLAGS.png, FLAGS.num)
    print(f"  picture of {min(FLAGS.num, len(batch['shift']))} tracks -> {FLAGS.png}")
