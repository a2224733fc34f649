"""The package layout is honest: imports go one way (docs/architecture.md) and only the CLI
prints. Checked on the source of every module, function-level imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cloche

PACKAGE = Path(cloche.__file__).parent
ALL = ("cloche.dockerfile", "cloche.plan", "cloche.engine", "cloche.sandbox", "cloche.layers",
       "cloche.oci", "cloche.store", "cloche.registry", "cloche.ops", "cloche.explainer",
       "cloche.cli", "cloche.api", "cloche.fs")
# What each package may not import: everything above it in the pipeline, and the CLI.
FORBIDDEN = {
    # the bottom: file-system primitives use only the errors and cloche.compression
    "fs": ALL[:-1] + ("cloche.events",),
    "oci": ("cloche.dockerfile", "cloche.plan", "cloche.engine", "cloche.sandbox",
            "cloche.layers", "cloche.store", "cloche.registry", "cloche.ops", "cloche.events",
            "cloche.cli", "cloche.api"),
    "layers": ("cloche.dockerfile", "cloche.plan", "cloche.engine", "cloche.sandbox",
               "cloche.store", "cloche.registry", "cloche.cli", "cloche.api"),
    "sandbox": ("cloche.dockerfile", "cloche.plan", "cloche.engine", "cloche.layers",
                "cloche.oci", "cloche.store", "cloche.registry", "cloche.cli", "cloche.api"),
    # the store is blobs, names and locks: it parses names with the OCI core's Reference and
    # knows nothing of registries (pull writes into the store, not the other way round)
    "store": ("cloche.dockerfile", "cloche.plan", "cloche.engine", "cloche.sandbox",
              "cloche.registry", "cloche.ops", "cloche.cli", "cloche.api"),
    "registry": ("cloche.dockerfile", "cloche.plan", "cloche.engine", "cloche.sandbox",
                 "cloche.ops", "cloche.cli", "cloche.api"),
    # the face's operations (import, save/load, inspect) may use every part below the face
    "ops": ("cloche.cli", "cloche.api"),
    "dockerfile": ("cloche.plan", "cloche.engine", "cloche.sandbox", "cloche.layers",
                   "cloche.oci", "cloche.store", "cloche.registry", "cloche.cli", "cloche.api"),
    "plan": ("cloche.engine", "cloche.sandbox", "cloche.layers", "cloche.oci", "cloche.store",
             "cloche.registry", "cloche.cli", "cloche.api"),
    "engine": ("cloche.ops", "cloche.explainer", "cloche.cli", "cloche.api"),
    # cloche explain: reads images (OCI core, layers, store) and a build's reports; nothing
    # below it knows of it
    "explainer": ("cloche.cli", "cloche.api", "cloche.sandbox", "cloche.registry"),
    # rootless mode: who the caller is (asked by the store, the registry client, the sandbox)
    # and the user namespace the CLI enters; it stands on the errors alone
    "rootless": ALL + ("cloche.events", "cloche.compression"),
}
# nothing below `cloche explain` imports it (the engine's entry is above)
for _below in ("oci", "layers", "sandbox", "store", "registry", "ops", "dockerfile", "plan"):
    FORBIDDEN[_below] += ("cloche.explainer",)


def test_fs_and_compression_sit_at_the_bottom() -> None:
    """``cloche.compression`` imports only the errors; ``cloche.fs`` only the errors and
    cloche.compression (an allow-list, so that a new package cannot slip in)."""
    allowed = {"cloche.errors", "cloche.compression"}
    assert {m for m in _imports(PACKAGE / "compression.py") if m.startswith("cloche")} <= {
        "cloche.errors"}
    files = _modules("fs")
    assert files
    for path in files:
        bad = sorted(m for m in _imports(path) if m.startswith("cloche")
                     and m not in allowed and not m.startswith("cloche.fs"))
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_the_event_protocol_sits_at_the_bottom() -> None:
    """``cloche.events`` is shared by the engine, the registry client and the face: it may
    use the OCI core's values and the errors, nothing above them."""
    imported = _imports(PACKAGE / "events.py")
    above = sorted(m for m in imported if m.startswith("cloche.")
                   and not m.startswith(("cloche.oci.", "cloche.errors")))
    assert "cloche.oci.descriptor" in imported and above == []


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


# -- no cycles: between packages, nor between the modules of one package ---------------------

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path, known: set[str]) -> set[str]:
    """The cloche modules ``path`` imports when it runs (function-level imports included;
    ``if TYPE_CHECKING:`` blocks left out: they never run). ``from pkg import mod`` names the
    module ``pkg.mod``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return {m for m in found if m in known}


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(paths)
    return {name: _runtime_imports(path, known) - {name} for name, path in paths.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    item = stack.pop()
                    on_stack.discard(item)
                    component.append(item)
                    if item == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_cycle_between_packages() -> None:
    packages: dict[str, set[str]] = {}
    for module, imported in _graph().items():
        packages.setdefault(_package(module), set()).update(
            _package(m) for m in imported if _package(m) != _package(module))
    assert _cycles(packages) == []


def test_no_cycle_inside_a_package() -> None:
    """Modules of one package import each other one way too. A package's ``__init__`` that
    re-exports its modules lazily is left out of its own package's graph."""
    inside: dict[str, dict[str, set[str]]] = {}
    for module, imported in _graph().items():
        package = _package(module)
        inside.setdefault(package, {})[module] = {
            m for m in imported if _package(m) == package and m != package}
    cycles = {package: found for package, graph in inside.items()
              if (found := _cycles(graph))}
    assert cycles == {}


# -- the faces: the CLI and cloche.api reach the engine through its face only ----------------

ENGINE_FACE = ("cloche.engine", "cloche.engine.options", "cloche.engine.events",
               "cloche.engine.pipeline")


@pytest.mark.parametrize("where", ["cli", "api.py", "explainer"])
def test_the_cli_and_the_api_use_only_the_engines_face(where: str) -> None:
    files = _modules(where) if not where.endswith(".py") else [PACKAGE / where]
    for path in files:
        inner = sorted(m for m in _imports(path)
                       if m.startswith("cloche.engine.") and m not in ENGINE_FACE)
        assert not inner, f"{path.relative_to(PACKAGE)} reaches into {inner}"


# The engine runs the plan's resolved steps: it never parses Dockerfile text nor looks stages
# up in the Dockerfile (pipeline.py, its entry point, reads the Dockerfile once, to plan it).
ENGINE_NEVER = ("cloche.dockerfile.parser", "cloche.dockerfile.from_nodes",
                "cloche.dockerfile._parse", "cloche.dockerfile.stages")
ENGINE_READS_THE_DOCKERFILE = {"pipeline.py": ("cloche.dockerfile.stages",)}


def test_the_engine_never_parses_or_reads_the_dockerfile() -> None:
    for path in _modules("engine"):
        allowed = ENGINE_READS_THE_DOCKERFILE.get(str(path.relative_to(PACKAGE / "engine")), ())
        bad = sorted(m for m in _imports(path)
                     if m.startswith(ENGINE_NEVER) and m not in allowed)
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"
