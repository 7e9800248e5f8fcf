"""One batch of training views, to look at what the model sees (`mt2 views`).

  mt2 views --config=configs/mt2.py:runlocal --data DATA --out views.npz --png views.png

`first_batch` is the first batch of the config's pipeline (same seed, crops
and shifts as step 0 of training, on this process's records): x_a, x_b,
x_a_shift [B, crop_bins, segment_frames] float32 and shift [B] (and shift_b
with data.b_offset='own'), plus what was
drawn: record, epoch, start_a, start_b, offset and track_id. `plot_views`
draws A, B and A' side by side for the first tracks, each row titled with its
track and shift. The command line is mt2_jax/cli/views.py.
"""

import numpy as np

from mt2_jax.data import pipeline


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
    u = o + int(batch["shift_b"][i]) if "shift_b" in batch else o  # data.b_offset='own'.
    bins, frames = batch["x_a"].shape[1:]
    sa, sb = int(batch["start_a"][i]), int(batch["start_b"][i])
    names = {"x_a": f"A: bins [{o}, {o + bins}), frames [{sa}, {sa + frames})",
             "x_b": f"B: bins [{u}, {u + bins}), frames [{sb}, {sb + frames})",
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

