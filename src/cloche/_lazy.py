"""Lazy package exports: a package names what it re-exports and where it lives, and each
module is imported on first use (a no-op rebuild never loads the archive writers or the
layer readers it does not need)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

MODULE = "!module"  # a value ending so names a submodule itself, not an attribute of it


def exports(package: str, table: Mapping[str, str],
            namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``table[name]`` on first use and
    keeps the value in the package's ``namespace`` (its globals)."""
    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if module.endswith(MODULE):
            value = importlib.import_module(module[:-len(MODULE)])
        else:
            value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
