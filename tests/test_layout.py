"""The house rules of imgen's layout (README "Layout"), checked on the source."""

import ast
import os
import shutil
import subprocess
import sys

from helpers import ROOT


def test_imports_follow_the_layers_in_pyproject():
  """`lint-imports` on the contracts in pyproject.toml: the layers, and modes
  (and the independent families) that never import one another."""
  linter = shutil.which("lint-imports", path=os.path.dirname(sys.executable))
  assert linter, "import-linter is a test dependency: pip install -e '.[test]'"
  done = subprocess.run([linter], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
  assert "broken" in done.stdout and " 0 broken" in done.stdout, done.stdout[-2000:]


def test_no_import_cycles_between_modules():
  import grimp  # pylint: disable=g-import-not-at-top (import-linter's graph)

  graph = grimp.build_graph("imgen")
  cycles = []
  for module in sorted(graph.modules):
    for imported in sorted(graph.find_modules_directly_imported_by(module)):
      back = graph.find_shortest_chain(importer=imported, imported=module)
      if back:
        cycles.append(" -> ".join([module, *back]))
  assert not cycles, "\n".join(cycles)


def _getattr_on_a_family(path: str) -> list[str]:
  """`getattr(<...family...>, name)` calls in a source file: a family hook
  read without being declared in imgen/families/base.py."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and node.args:
      target = ast.unparse(node.args[0])
      if "family" in target or "judge" in target:
        found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
  return found


def test_modes_and_evaluation_use_only_the_hooks_families_declare():
  found = []
  for folder in ("modes", "evaluation"):
    base = os.path.join(ROOT, "imgen", folder)
    for name in sorted(os.listdir(base)):
      if name.endswith(".py"):
        found += _getattr_on_a_family(os.path.join(base, name))
  assert not found, "\n".join(found)
