"""cloche: a daemonless container image builder.

Dockerfiles are executed with the semantics of ``docker build`` (BuildKit) and the result is
a standard OCI image. The public surface is re-exported here; everything else is private.
Names load on first use, so that ``import cloche`` stays cheap for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cloche import _lazy

__version__ = "0.1.0"

_EXPORTS = {
    "build": "cloche.api", "BuildResult": "cloche.api", "check": "cloche.api",
    "pull": "cloche.api", "push": "cloche.api", "save": "cloche.api", "load": "cloche.api",
    "inspect": "cloche.api", "images": "cloche.api", "import_image": "cloche.api",
    "disk_usage": "cloche.api", "prune": "cloche.api", "explain": "cloche.api",
    "Image": "cloche.oci.image", "Platform": "cloche.oci.platform",
    "Reference": "cloche.oci.reference", "PushResult": "cloche.registry.push",
    "LoadedImage": "cloche.ops.transfer", "ImageSummary": "cloche.ops.describe",
    "ChangeError": "cloche.ops.changes",
    "Event": "cloche.events", "Listener": "cloche.events",
    "BuildOptions": "cloche.engine.options", "OutputSpec": "cloche.engine.options",
    "SecretSpec": "cloche.engine.options",
    "ClocheError": "cloche.errors", "DockerfileError": "cloche.errors",
    "BuildError": "cloche.errors", "ConfigError": "cloche.errors",
    "RegistryError": "cloche.errors", "StoreError": "cloche.errors",
    "ImageNotFoundError": "cloche.errors", "SandboxError": "cloche.errors",
    "InvalidReferenceError": "cloche.errors", "DigestError": "cloche.errors",
    "LayerError": "cloche.errors", "UnsafePathError": "cloche.errors",
}

__all__ = [  # a literal: type checkers read it (a test keeps it equal to _EXPORTS)
    "BuildError", "BuildOptions", "BuildResult", "ChangeError", "ClocheError", "ConfigError",
    "DigestError", "DockerfileError", "Event", "Image", "ImageNotFoundError", "ImageSummary",
    "InvalidReferenceError", "LayerError", "Listener", "LoadedImage", "OutputSpec", "Platform",
    "PushResult", "Reference", "RegistryError", "SandboxError", "SecretSpec", "StoreError",
    "UnsafePathError", "__version__", "build", "check", "disk_usage", "explain", "images",
    "import_image",
    "inspect", "load", "prune", "pull", "push", "save",
]


__getattr__ = _lazy.exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:
    from cloche.api import (
        BuildResult,
        build,
        check,
        disk_usage,
        explain,
        images,
        import_image,
        inspect,
        load,
        prune,
        pull,
        push,
        save,
    )
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
    from cloche.events import Event, Listener
    from cloche.oci.image import Image
    from cloche.oci.platform import Platform
    from cloche.oci.reference import Reference
    from cloche.ops.changes import ChangeError
    from cloche.ops.describe import ImageSummary
    from cloche.ops.transfer import LoadedImage
    from cloche.registry.push import PushResult
