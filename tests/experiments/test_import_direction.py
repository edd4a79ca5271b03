"""Dependencies run one way, analysis -> experiments -> decoding: no module imports against the arrow.

Read from the source (every import statement, also those inside functions), so a lazy import that would
close a cycle only at run time is caught too.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports anywhere in its body (relative imports stay in their package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package, forbidden", [("experiments", {"analysis", "bench"}),
                                                ("decoding", {"experiments", "analysis", "bench"})])
def test_no_import_against_the_dependency_arrow(package, forbidden):
    offenders = {str(path.relative_to(ROOT)): sorted(imported_packages(path) & forbidden)
                 for path in sorted((ROOT / package).rglob("*.py"))}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_loop_does_not_import_the_strategies_that_build_on_it():
    """loop.py is below the strategies (beam.py, beam_diverse.py) and generate.py, the dispatch above them."""
    imports = {node.module for node in ast.walk(ast.parse((ROOT / "decoding" / "loop.py").read_text()))
               if isinstance(node, ast.ImportFrom) and node.level == 1}
    assert not imports & {"beam", "beam_diverse", "generate"}
    beam = {node.module for node in ast.walk(ast.parse((ROOT / "decoding" / "beam.py").read_text()))
            if isinstance(node, ast.ImportFrom) and node.level == 1}
    assert not beam & {"beam_diverse", "generate"}
