"""The build engine's parts. This package exports the build context and COPY/ADD file operations.

The engine (``executor.py``, ``dispatch/``) mounts a stage's rootfs and calls ``copy_into`` or
``add_into`` with a ``CopyRequest``; ``content_hash`` gives the cache key part of a COPY/ADD.
"""

import sys
import types

_EXPORTS = {
    "add_into": "add", "ChmodError": "chmod", "ChmodSpec": "chmod", "parse_chmod": "chmod",
    "BuildContext": "context", "ContextError": "context", "context_from_directory": "context",
    "context_from_stream": "context", "open_context": "context",
    "CopyDestinationError": "copy", "CopyRequest": "copy", "CopyResult": "copy",
    "copy_into": "copy", "destination_path": "copy",
    "DockerignoreError": "dockerignore", "PatternMatcher": "dockerignore",
    "load_matcher": "dockerignore", "ArchiveError": "extract", "extract_tar": "extract",
    "is_tar_archive": "extract", "CopyIOError": "fsutil", "CopyTargetError": "fsutil",
    "Owner": "fsutil", "BadPatternError": "pathmatch", "Download": "remote",
    "DownloadError": "remote", "download": "remote", "SourceNotFoundError": "sources",
    "SourceTree": "sources", "content_hash": "sources", "inline_tree": "sources",
    "match_sources": "sources",
}


def __getattr__(name: str):  # lazy: the engine imports this package on every build
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(f"cloche.build.{module}"), name)


__all__ = [
    "ArchiveError", "BadPatternError", "BuildContext", "ChmodError", "ChmodSpec", "ContextError",
    "CopyDestinationError", "CopyIOError", "CopyRequest", "CopyResult", "CopyTargetError", "DockerignoreError",
    "Download", "DownloadError", "Owner", "PatternMatcher", "SourceNotFoundError", "SourceTree",
    "add_into", "content_hash", "context_from_directory", "context_from_stream", "copy_into",
    "destination_path", "download", "extract_tar", "is_tar_archive", "load_matcher",
    "inline_tree", "match_sources", "open_context", "parse_chmod",
]


class _CallablePackage(types.ModuleType):
    """``cloche.build`` is both this package and the library's front door: once the package
    is imported, Python binds the name to it, so calling it must still build an image."""

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204 - cloche.api.build's
        from cloche.api import build

        return build(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
