"""The package layout is honest: imports go one way (docs/architecture.md) and only the CLI
prints. Checked on the source of every module, function-level imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cloche

PACKAGE = Path(cloche.__file__).parent
ALL = ("cloche.dockerfile", "cloche.plan", "cloche.engine", "cloche.sandbox", "cloche.layers",
       "cloche.oci", "cloche.store", "cloche.registry", "cloche.cli", "cloche.api")
# What each package may not import: everything above it in the pipeline, and the CLI.
FORBIDDEN = {
    "oci": ("cloche.dockerfile", "cloche.plan", "cloche.engine", "cloche.sandbox",
            "cloche.layers", "cloche.store", "cloche.registry", "cloche.cli", "cloche.api"),
    "layers": ("cloche.dockerfile", "cloche.plan", "cloche.engine", "cloche.sandbox",
               "cloche.store", "cloche.registry", "cloche.cli", "cloche.api"),
    "sandbox": ("cloche.dockerfile", "cloche.plan", "cloche.engine", "cloche.layers",
                "cloche.oci", "cloche.store", "cloche.registry", "cloche.cli", "cloche.api"),
    "store": ("cloche.dockerfile", "cloche.plan", "cloche.engine", "cloche.sandbox",
              "cloche.cli", "cloche.api"),
    "registry": ("cloche.dockerfile", "cloche.plan", "cloche.engine", "cloche.sandbox",
                 "cloche.cli", "cloche.api"),
    "dockerfile": ("cloche.plan", "cloche.engine", "cloche.sandbox", "cloche.layers",
                   "cloche.oci", "cloche.store", "cloche.registry", "cloche.cli", "cloche.api"),
    "plan": ("cloche.engine", "cloche.sandbox", "cloche.layers", "cloche.oci", "cloche.store",
             "cloche.registry", "cloche.cli", "cloche.api"),
    "engine": ("cloche.cli", "cloche.api"),
}


def _modules(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_go_one_way(package: str) -> None:
    files = _modules(package)
    assert files
    for path in files:
        bad = sorted(m for m in _imports(path) if m.startswith(FORBIDDEN[package]))
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_only_the_cli_prints() -> None:
    library = [p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts]
    assert len(library) > 50
    for path in library:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        prints = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call)
                  and isinstance(n.func, ast.Name) and n.func.id == "print"]
        assert not prints, f"{path.relative_to(PACKAGE)} prints at lines {prints}"


def test_the_library_never_exits_the_process() -> None:
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if "cli" in rel.parts or rel.parts[-1] == "init.py":  # the sandbox's init is a process
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        exits = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Attribute) and n.func.attr == "exit"
                 and isinstance(n.func.value, ast.Name) and n.func.value.id == "sys"]
        assert not exits, f"{rel} calls sys.exit at lines {exits}"


def test_every_test_directory_is_collected() -> None:
    """pytest skips directories matching ``norecursedirs`` (by default that includes any
    "build" directory, which hid tests/engine from the suite once): no folder holding tests
    (nor its parents) may match."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parent
    config = tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["pytest"]
    patterns = config["ini_options"].get("norecursedirs", [  # pytest's default
        "*.egg", ".*", "_darcs", "build", "CVS", "dist", "node_modules", "venv", "{arch}"])
    dirs = sorted({f.parent for f in root.rglob("test_*.py")})  # the folders holding tests
    assert any(d.name == "engine" for d in dirs)
    hidden = [str(d.relative_to(root)) for d in dirs
              if any(fnmatch.fnmatch(part, p) for part in d.relative_to(root).parts
                     for p in patterns)]
    assert hidden == []
