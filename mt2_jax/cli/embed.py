"""`mt2 embed`: embed a folder of audio with a trained run.

  mt2 embed --workdir=RUN --audio DIR --out OUT [--tokens] [--step N]

Writes one .npz per audio file under DIR, at the same relative path in OUT
(files whose .npz exists are skipped; unreadable ones are listed): each class
token (cls_<name>), their mean, tokens_mean and the equivariant heads'
profiles, averaged over training-length windows and per window, with the
windows' timestamps; --tokens adds one sequence token per CQT frame. What
each array holds: mt2_jax/eval/embed.py.
"""

from typing import Sequence

from absl import app
from absl import flags

from mt2_jax.eval import embed

# allow_override: probe, prepare, train and others share --workdir, --audio,
# --out, --step (mt2_jax/cli/__init__.py).
_WORKDIR = flags.DEFINE_string("workdir", None, "Training run folder (config.json + checkpoints).",
                               allow_override=True)
_AUDIO = flags.DEFINE_string("audio", None, "Folder of audio files (searched recursively).",
                             allow_override=True)
_OUT = flags.DEFINE_string("out", None, "Output folder: one .npz per audio file.",
                           allow_override=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).",
                             allow_override=True)
_BLOCK_WINDOWS = flags.DEFINE_integer("block_windows", 16,
                                      "Windows per block (memory bound, batch size).",
                                      allow_override=True)
_TOKENS = flags.DEFINE_bool("tokens", False, "Also store the per-frame sequence tokens.",
                            allow_override=True)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for name, flag in (("workdir", _WORKDIR), ("audio", _AUDIO), ("out", _OUT)):
    if not flag.value:
      raise app.UsageError(f"--{name} is required: mt2 embed --workdir=RUN --audio DIR --out OUT")
  embedder = embed.Embedder.from_run(_WORKDIR.value, _STEP.value,
                                     block_windows=_BLOCK_WINDOWS.value)
  written, rejected = embed.embed_folder(embedder, _AUDIO.value, _OUT.value, tokens=_TOKENS.value)
  print(f"embed: step {embedder.step}, {len(written)} files -> {_OUT.value}, "
        f"{len(rejected)} skipped")
  for rel, reason in rejected:
    print(f"  skipped {rel}: {reason}")
