"""Imports go one way: the Dockerfile front end knows nothing of planning, building or the
CLI, and the planner knows nothing of building or the CLI (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cloche

PACKAGE = Path(cloche.__file__).parent
RULES = {"dockerfile": ("cloche.plan", "cloche.build", "cloche.cli", "cloche.sandbox",
                        "cloche.registry", "cloche.store", "cloche.api"),
         "plan": ("cloche.build", "cloche.cli", "cloche.sandbox", "cloche.registry",
                  "cloche.store", "cloche.api")}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", sorted(RULES))
def test_front_end_imports_go_one_way(package: str) -> None:
    files = sorted((PACKAGE / package).glob("*.py"))
    assert files
    for path in files:
        bad = {m for m in _imports(path) if m.startswith(RULES[package])}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_library_never_prints() -> None:
    for package in RULES:
        for path in (PACKAGE / package).glob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                     and isinstance(n.func, ast.Name) and n.func.id == "print"]
            assert not calls, f"{path.name} prints"
