"""The build engine's parts. This package exports the build context and COPY/ADD file operations.

The engine (``executor.py``, ``dispatch/``) mounts a stage's rootfs and calls ``copy_into`` or
``add_into`` with a ``CopyRequest``; ``content_hash`` gives the cache key part of a COPY/ADD.
"""

from cloche.build.add import add_into
from cloche.build.chmod import ChmodError, ChmodSpec, parse_chmod
from cloche.build.context import BuildContext, ContextError, context_from_directory, \
    context_from_stream, open_context
from cloche.build.copy import CopyDestinationError, CopyRequest, CopyResult, copy_into, \
    destination_path
from cloche.build.dockerignore import DockerignoreError, PatternMatcher, load_matcher
from cloche.build.extract import ArchiveError, extract_tar, is_tar_archive
from cloche.build.fsutil import CopyIOError, CopyTargetError, Owner
from cloche.build.pathmatch import BadPatternError
from cloche.build.remote import Download, DownloadError, download
from cloche.build.sources import SourceNotFoundError, SourceTree, content_hash, inline_tree, \
    match_sources

__all__ = [
    "ArchiveError", "BadPatternError", "BuildContext", "ChmodError", "ChmodSpec", "ContextError",
    "CopyDestinationError", "CopyIOError", "CopyRequest", "CopyResult", "CopyTargetError", "DockerignoreError",
    "Download", "DownloadError", "Owner", "PatternMatcher", "SourceNotFoundError", "SourceTree",
    "add_into", "content_hash", "context_from_directory", "context_from_stream", "copy_into",
    "destination_path", "download", "extract_tar", "is_tar_archive", "load_matcher",
    "inline_tree", "match_sources", "open_context", "parse_chmod",
]
