"""Every third-party package skdistill imports is a declared dependency."""

from __future__ import annotations

import ast
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PACKAGE = Path(__file__).resolve().parents[1] / "skdistill"


def _imports(tree: ast.AST) -> tuple[set[str], set[str]]:
    """Top-level module names imported at module level and inside functions."""
    module_level, lazy = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = {node.module.split(".")[0]}
        else:
            continue
        (module_level if node.col_offset == 0 else lazy).update(names)
    return module_level, lazy


def _declared() -> tuple[set[str], set[str]]:
    """Distribution names required always, and those required only by an extra."""
    always, optional = set(), set()
    for text in requires("skdistill") or []:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        (optional if requirement.marker else always).add(name)
    return always, optional


def test_imported_packages_are_declared():
    distributions = packages_distributions()
    always, optional = _declared()
    missing, eager_optional = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        module_level, lazy = _imports(ast.parse(path.read_text()))
        for name in sorted(module_level | lazy):
            if name in sys.stdlib_module_names or name in {"skdistill", "__future__"}:
                continue
            owners = {d.lower().replace("_", "-") for d in distributions.get(name, [name])}
            if owners & always:
                continue
            if owners & optional and name in lazy and name not in module_level:
                continue
            if owners & optional:
                eager_optional.append(f"{path.name}: {name}")
            else:
                missing.append(f"{path.name}: {name}")
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    assert not eager_optional, f"optional dependency imported at module level: {eager_optional}"


@pytest.mark.parametrize("name", ["pandas", "threadpoolctl"])
def test_directly_imported_packages_are_declared(name):
    always, _ = _declared()
    assert name in always
