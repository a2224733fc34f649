"""cloche: a daemonless container image builder.

Dockerfiles are executed with the semantics of ``docker build`` (BuildKit) and the result is
a standard OCI image. The public surface is re-exported here; everything else is private.
Names load on first use, so that ``import cloche`` stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "build": "cloche.api", "BuildResult": "cloche.api",
    "BuildOptions": "cloche.engine.options", "OutputSpec": "cloche.engine.options",
    "SecretSpec": "cloche.engine.options",
    "ClocheError": "cloche.errors", "DockerfileError": "cloche.errors",
    "BuildError": "cloche.errors", "ConfigError": "cloche.errors",
    "RegistryError": "cloche.errors", "StoreError": "cloche.errors",
    "ImageNotFoundError": "cloche.errors", "SandboxError": "cloche.errors",
    "InvalidReferenceError": "cloche.errors", "DigestError": "cloche.errors",
    "LayerError": "cloche.errors", "UnsafePathError": "cloche.errors",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from cloche.api import BuildResult, build
    from cloche.engine.options import BuildOptions, OutputSpec, SecretSpec
    from cloche.errors import (
        BuildError,
        ClocheError,
        ConfigError,
        DigestError,
        DockerfileError,
        ImageNotFoundError,
        InvalidReferenceError,
        LayerError,
        RegistryError,
        SandboxError,
        StoreError,
        UnsafePathError,
    )
