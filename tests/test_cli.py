"""The `mt2` dispatcher (mt2_jax/cli): its commands and a quiet console.

(That only mt2_jax/cli/ defines flags is tests/test_layering.py's.)
"""

import importlib.util
import re
import subprocess
import sys

import pytest

from mt2_jax import cli

ABSL_INFO = re.compile(r"^I\d{4} \d\d:\d\d:\d\d", re.M)  # absl's prefix: I<mmdd> <time>.


def test_usage_and_unknown_commands(capsys):
  with pytest.raises(SystemExit) as done:
    cli.main(["mt2", "--help"])
  assert done.value.code == 0
  out = capsys.readouterr().out
  assert all(re.search(rf"^  {name} ", out, re.M) for name in cli.COMMANDS), out
  with pytest.raises(SystemExit) as done:
    cli.main(["mt2", "trian"])
  assert done.value.code == 2 and "unknown command 'trian'" in capsys.readouterr().err
  with pytest.raises(SystemExit) as done:
    cli.main(["mt2"])
  assert done.value.code == 2


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_has_its_module(name):
  module = cli.COMMANDS[name][0]
  assert module.startswith("mt2_jax.cli.") and importlib.util.find_spec(module), module


FAKE_COMMAND = '''
import logging as std_logging
from absl import logging

def main(argv):
  logging.info("absl-info-mark")
  logging.warning("absl-warning-mark")
  std_logging.getLogger("orbax").info("library-info-mark")  # As Orbax, TFDS, JAX log.
  print("summary-mark")
'''


@pytest.mark.parametrize("verbosity", [[], ["--verbosity=0"], ["-v=0"]])
def test_console_is_quiet_unless_asked(tmp_path, verbosity):
  """A command run by the dispatcher shows warnings and its own output but no
  INFO logs, absl's or a library's, unless --verbosity / -v asks for them."""
  (tmp_path / "fake_command.py").write_text(FAKE_COMMAND)
  script = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); from mt2_jax import cli; "
            "cli.COMMANDS['fake'] = ('fake_command', 'a test'); cli.main(['mt2', 'fake', *sys.argv[1:]])")
  done = subprocess.run([sys.executable, "-c", script, *verbosity], capture_output=True, text=True,
                        timeout=120)
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == "summary-mark"
  assert "absl-warning-mark" in done.stderr
  loud = bool(verbosity)
  assert ("absl-info-mark" in done.stderr) == loud, done.stderr
  assert ("library-info-mark" in done.stderr) == loud, done.stderr
  assert bool(ABSL_INFO.search(done.stderr)) == loud, done.stderr
