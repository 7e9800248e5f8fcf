"""The `mt2` console script: `mt2 SUBCOMMAND [flags]`.

Each subcommand is one module of this package holding its absl flags and its
`main(argv)`, which calls the library (mt2_jax.data, .train, .eval, ...); the
libraries define no flags and take plain arguments. Only the chosen module is
imported, so `mt2 corpus` never pays for JAX and the flags of one stage never
meet another's. A process that imports several of these modules (the test
suite) sees shared names (--out, --config, --workdir) more than once, so a
command module defines its flags with `allow_override=True`: the later
definition replaces the earlier instead of raising DuplicateFlagError, and
values are read by name (FlagHolder.value, flags.FLAGS.name).

The console is quiet by default: absl's verbosity is WARNING unless the user
passes --verbosity (or -v), so progress bars, summaries and real warnings show
but INFO logs of the libraries underneath (Orbax's checkpoint options, TFDS's
dataset notices, JAX's backend probing) do not; `--verbosity=0` brings them
back.
"""

import importlib
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging

# name -> (module, one-line help). Modules define absl flags at import time.
COMMANDS = {
    "corpus": ("mt2_jax.cli.corpus", "render the built-in Bach-chorale corpus to audio + labels.csv"),
    "prepare": ("mt2_jax.cli.prepare", "audio folder -> pre-sharded CQT dataset (TFDS ArrayRecord)"),
    "views": ("mt2_jax.cli.views", "write one batch of training views (and a picture of them)"),
    "info": ("mt2_jax.cli.info", "parameters, FLOPs and output shapes of a config"),
    "train": ("mt2_jax.cli.train", "pretrain MT2 (resumes from --workdir)"),
    "embed": ("mt2_jax.cli.embed", "embed a folder of audio with a trained run"),
    "probe": ("mt2_jax.cli.probe", "linear probes on frozen features"),
    "bench": ("mt2_jax.cli.bench", "throughput benchmarks"),
    "demo": ("mt2_jax.cli.demo", "the whole pipeline on the built-in corpus at CPU size"),
}


def usage() -> str:
  lines = ["usage: mt2 COMMAND [--flags]   (mt2 COMMAND --help for its flags)", "", "commands:"]
  lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
  return "\n".join(lines)


def quiet_logging() -> None:
  """Logs WARNING and above only, unless the command line set --verbosity / -v.

  app.run raises an unset verbosity to INFO after parsing, and with absl's
  handler on the root logger that level applies to every Python logger, so
  libraries' INFO lines (Orbax logs each checkpoint's options, TFDS each
  dataset it opens) would fill the console. Call after flags are parsed.
  """
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def _quietly(main_fn: Callable[[Sequence[str]], None], name: str) -> Callable[[Sequence[str]], None]:
  def run(argv: Sequence[str]) -> None:
    quiet_logging()
    try:
      return main_fn(argv)
    except (FileNotFoundError, NotADirectoryError) as e:
      # A missing folder, file or bucket (mt2_jax/storage.py names it): a
      # message, not a traceback.
      print(f"mt2 {name}: {e}", file=sys.stderr)
      sys.exit(1)
  return run


def main(argv: Sequence[str] | None = None) -> None:
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
    print("\n(--helpfull lists absl's and JAX's flags too; --verbosity=0 shows INFO logs)")
    sys.exit(0)
  # absl parses the remaining flags; the program name keeps the subcommand so
  # that --help output reads "mt2 train".
  app.run(_quietly(module.main, name), argv=[f"mt2 {name}"] + argv[2:])
