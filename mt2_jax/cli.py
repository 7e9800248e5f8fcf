"""The `mt2` console script: `mt2 SUBCOMMAND [flags]`.

Each subcommand lives in its own module with an absl `main(argv)` and its own
flags; only the chosen module is imported, so `mt2 corpus` never pays for JAX
and flags of one stage never collide with another's.
"""

import importlib
import sys

from absl import app
from absl import flags

# name -> (module, one-line help). Modules define absl flags at import time.
COMMANDS = {
    "corpus": ("mt2_jax.data.corpus", "render the built-in Bach-chorale corpus to audio + labels.csv"),
    "prepare": ("mt2_jax.data.prepare", "audio folder -> pre-sharded CQT dataset (TFDS ArrayRecord)"),
    "views": ("mt2_jax.data.views", "write one batch of training views (and a picture of them)"),
    "info": ("mt2_jax.info", "parameters, FLOPs and output shapes of a config"),
    "train": ("mt2_jax.train.loop", "pretrain MT2 (resumes from --workdir)"),
    "embed": ("mt2_jax.eval.embed", "embed a folder of audio with a trained run"),
    "probe": ("mt2_jax.eval.probe", "linear probes on frozen features"),
    "bench": ("mt2_jax.bench", "throughput benchmarks"),
    "demo": ("mt2_jax.demo", "the whole pipeline on the built-in corpus at CPU size"),
}


def usage() -> str:
  lines = ["usage: mt2 COMMAND [--flags]   (mt2 COMMAND --help for its flags)", "", "commands:"]
  lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
  return "\n".join(lines)


def main(argv=None) -> None:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    print(usage())
    sys.exit(0 if len(argv) >= 2 else 2)
  name = argv[1]
  if name not in COMMANDS:
    print(f"mt2: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
    sys.exit(2)
  module = importlib.import_module(COMMANDS[name][0])
  if any(arg in ("-h", "--help", "-help", "--helpshort") for arg in argv[2:]):
    # absl's --help lists only __main__'s flags, which here are none.
    print(f"usage: mt2 {name} [--flags]\n\n{(module.__doc__ or '').strip()}\n")
    print(flags.FLAGS.module_help(module).strip() or "(no flags)")
    print("\n(--helpfull lists absl's and JAX's flags too)")
    sys.exit(0)
  # absl parses the remaining flags; the program name keeps the subcommand so
  # that --help output reads "mt2 train".
  app.run(module.main, argv=[f"mt2 {name}"] + argv[2:])


if __name__ == "__main__":
  main()
