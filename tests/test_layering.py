"""The package's layering, read from the source (docs/design.md §3, "Layering").

The data flows one way: data -> model -> train -> eval -> demo -> cli. A module
may import its own stage and the stages below it, never one above; only the
command line (mt2_jax/cli/) defines absl flags; the package never imports the
benchmarks/ folder, which sits outside it.
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "mt2_jax"

# Module-name prefix -> stage. The longest matching prefix wins; a new module
# must be placed here (the test fails on an unknown one).
STAGES = {
    "mt2_jax": 0, "mt2_jax.host": 0, "mt2_jax.sharding": 0, "mt2_jax.losses": 0,
    "mt2_jax.keys": 0, "mt2_jax.config_defaults": 0, "mt2_jax.storage": 0,
    "mt2_jax.data": 1,
    "mt2_jax.model": 2,
    "mt2_jax.train": 3, "mt2_jax.config_validation": 3,
    "mt2_jax.eval": 4, "mt2_jax.embed": 4, "mt2_jax.hear": 4, "mt2_jax.info": 4,
    "mt2_jax.demo": 5,
    "mt2_jax.cli": 6,
}
FLAG_MODULES = ("absl.flags", "ml_collections.config_flags")


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage(name: str) -> int | None:
  matches = [p for p in STAGES if name == p or name.startswith(p + ".")]
  return STAGES[max(matches, key=len)] if matches else None


def imports(path: pathlib.Path) -> set[str]:
  """Every module a file imports, at any depth (lazy imports count too)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      out.add(node.module)
      out.update(f"{node.module}.{a.name}" for a in node.names)  # `from pkg import module`.
  return out


def sources():
  return sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_stage():
  unknown = [module_name(p) for p in sources() if stage(module_name(p)) is None]
  assert not unknown, f"place these in STAGES of tests/test_layering.py: {unknown}"


def test_no_stage_imports_a_higher_one():
  bad = []
  for path in sources():
    name = module_name(path)
    for imported in imports(path):
      if imported.startswith("mt2_jax") and (stage(imported) or 0) > stage(name):
        bad.append(f"{name} (stage {stage(name)}) imports {imported} (stage {stage(imported)})")
  assert not bad, "\n".join(sorted(set(bad)))


def test_only_the_command_line_defines_flags():
  bad = [f"{module_name(p)} imports {m}" for p in sources() if not module_name(p).startswith("mt2_jax.cli")
         for m in imports(p) if m.startswith(FLAG_MODULES) or m in ("absl.flags",)]
  bad += [f"{module_name(p)} imports absl flags" for p in sources()
          if not module_name(p).startswith("mt2_jax.cli")
          and any(m == "absl" for m in imports(p)) and "from absl import flags" in p.read_text()]
  assert not bad, "\n".join(sorted(set(bad)))


def test_the_package_does_not_import_the_benchmarks():
  bad = [module_name(p) for p in sources()
         if any(m == "benchmarks" or m.startswith("benchmarks.") for m in imports(p))
         or "sys.path.insert" in p.read_text()]
  assert not bad, bad


def test_the_checks_see_a_violation(tmp_path):
  # The parser finds lazy imports and `from pkg import module` forms.
  f = tmp_path / "m.py"
  f.write_text("def f():\n  from mt2_jax.eval import probe\n  import benchmarks.scaling\n"
               "from absl import flags\n")
  found = imports(f)
  assert {"mt2_jax.eval.probe", "benchmarks.scaling", "absl.flags"} <= found
  assert stage("mt2_jax.eval.probe") > stage("mt2_jax.train.diagnostics")
