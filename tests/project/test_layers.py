"""The house has floors: the envs and the wrapper at the bottom, the run harness above them, the
training scripts above it, then the campaign library and the studies over campaigns. An import
may only point down; this test reads every module's imports (without running it) and names any
that points up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: package -> the packages above it, which none of its modules may import. From the ground up:
#: the envs and the wrapper, the run harness, the training scripts, the campaign library, the
#: one-question studies.
FLOORS = ("qmp_wrappers", "qmp_harness", "cleanrl_qmp", "qmp_experiments", "qmp_studies")
ABOVE = {
    "qmp_envs": FLOORS[1:],
    **{package: FLOORS[floor + 1 :] for floor, package in enumerate(FLOORS[:-1])},
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports (also inside functions), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def upward_imports(package: str, above: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, module in imported_modules(path)
        if module.split(".")[0] in above
    ]


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_no_module_imports_a_layer_above_its_own(package):
    assert upward_imports(package, ABOVE[package]) == []


def test_the_walk_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from qmp_experiments.plot import plot_runs\n")
    assert imported_modules(module) == [(2, "qmp_experiments.plot")]
