"""cloche: a daemonless container image builder.

Dockerfiles are executed with the semantics of ``docker build`` (BuildKit) and the result is
a standard OCI image. The public surface is re-exported here; everything else is private.
"""

from cloche.errors import ClocheError, DockerfileError

__version__ = "0.1.0"

__all__ = ["ClocheError", "DockerfileError", "__version__", "build"]


def __getattr__(name: str):  # lazy: `import cloche` stays cheap for the CLI
    if name in ("build", "BuildResult"):
        from cloche import api
        return getattr(api, name)
    raise AttributeError(name)
