"""`mt2 prepare --audio DIR --out DATA`: an audio folder -> pre-sharded CQT dataset.

  mt2 prepare --audio corpus/ --out data/ [--num_workers 4]
  # many machines, each a disjoint part (a SLURM array, the hosts of a pod):
  mt2 prepare --audio /audio --out /data --shard_index $I --num_shards $N

Any wav/flac/ogg/mp3 (any rate, mono or stereo), with the columns of a
labels.csv beside (or above) the audio, becomes a TFDS ArrayRecord dataset of
float16 log-CQTs. Re-runs skip finished shards; unusable files are listed in
DATA/rejected.csv, and the exit status is 1 only if nothing was usable. How
shards are planned and finished: mt2_jax/data/prepare.py.
"""

import os
import sys
from typing import Sequence

from absl import app
from absl import flags

from mt2_jax.data import prepare
from mt2_jax.data.cqt import CQTConfig

# allow_override: corpus and embed also have --out, --audio, --num_workers
# (mt2_jax/cli/__init__.py).
_AUDIO = flags.DEFINE_string("audio", None, "Folder of audio files (searched recursively).",
                             allow_override=True)
_OUT = flags.DEFINE_string("out", None, "Output dataset folder.", allow_override=True)
_WORKERS = flags.DEFINE_integer("num_workers", min(4, os.cpu_count() or 1),
                                "Local worker processes.", allow_override=True)
_SHARD_INDEX = flags.DEFINE_integer("shard_index", 0, "This machine's part, in [0, num_shards).",
                                    allow_override=True)
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "How many machines build the dataset.",
                                   allow_override=True)
_FILES_PER_SHARD = flags.DEFINE_integer("files_per_shard", 32, "Audio files per output shard.",
                                        allow_override=True)
_MAX_EXCERPT = flags.DEFINE_float("max_excerpt_seconds", 60.0,
                                  "Longer tracks are split into equal excerpts at most this long.",
                                  allow_override=True)
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 1.0, "Shorter files are rejected.",
                                  allow_override=True)
_SR = flags.DEFINE_integer("sample_rate", CQTConfig.sample_rate, "CQT sample rate (Hz).",
                           allow_override=True)
_FMIN = flags.DEFINE_float("fmin", CQTConfig.fmin, "CQT lowest bin (Hz).", allow_override=True)
_NBINS = flags.DEFINE_integer("n_bins", CQTConfig.n_bins, "CQT bins.", allow_override=True)
_BPO = flags.DEFINE_integer("bins_per_octave", CQTConfig.bins_per_octave, "CQT bins per octave.",
                            allow_override=True)
_HOP = flags.DEFINE_integer("hop_length", CQTConfig.hop_length, "CQT hop (samples).",
                            allow_override=True)


def report(s: prepare.Summary, out_dir: str) -> str:
  """What `mt2 prepare` prints about a run: counts, speed, rejections, completeness."""
  rate = s.audio_seconds / max(s.wall_seconds, 1e-9)
  lines = [f"prepare: {s.files} files -> {s.records} records, {len(s.rejected)} rejected, "
           f"{s.audio_seconds / 3600:.2f} h of audio in {s.wall_seconds:.1f} s "
           f"({rate:.0f}x real time); {s.skipped_shards} shards already done."]
  lines += [f"  rejected {rel}: {reason}" for rel, reason in s.rejected]
  if s.complete and s.total_records:
    lines.append(f"Dataset complete: {s.total_records} records in {out_dir} "
                 f"(rejected files listed in {out_dir}/rejected.csv).")
  elif not s.complete:
    lines.append("This part is done; the dataset metadata is written when the last part finishes "
                 "(re-run any part to check).")
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for name, flag in (("--audio", _AUDIO), ("--out", _OUT)):
    if not flag.value:
      raise app.UsageError(f"{name} is required: mt2 prepare --audio DIR --out DATA")
  cqt = CQTConfig(sample_rate=_SR.value, fmin=_FMIN.value, n_bins=_NBINS.value,
                  bins_per_octave=_BPO.value, hop_length=_HOP.value)
  s = prepare.prepare(_AUDIO.value, _OUT.value, cqt, num_workers=_WORKERS.value,
                      shard_index=_SHARD_INDEX.value, num_shards=_NUM_SHARDS.value,
                      files_per_shard=_FILES_PER_SHARD.value,
                      max_excerpt_seconds=_MAX_EXCERPT.value, min_seconds=_MIN_SECONDS.value)
  print(report(s, _OUT.value))
  if s.complete and s.total_records == 0:
    print(f"prepare: no usable audio in {_AUDIO.value}; nothing to train on.", file=sys.stderr)
    sys.exit(1)
