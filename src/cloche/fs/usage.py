"""Bytes used under a directory, for trees of any depth (``cloche du``, ``cloche prune``).

A RUN step may leave a tree deeper than any path the kernel accepts (PATH_MAX, 4,096 bytes,
is about 2,000 levels of one-letter names). The walk is iterative and addresses each
directory relative to an *anchor*: an open directory fd, and a path below it kept short.
When that path grows past ``_SHORT`` a new anchor is opened there, so a 10,000-level tree
needs a handful of fds, and no path string ever nears PATH_MAX. Links are never followed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["tree_blocks"]

_SHORT = 2048
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Anchor:
    """An open directory that paths below it are relative to; closed when no longer used."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self) -> None:
        os.close(self.fd)


def tree_blocks(path: str | Path) -> int:
    """Bytes allocated under ``path`` (st_blocks of everything below it, not the top itself);
    0 when it is missing or not a directory. Unreadable parts are skipped."""
    try:
        top = _Anchor(os.open(path, _DIR))
    except OSError:
        return 0
    total = 0
    pending: list[tuple[_Anchor, str]] = [(top, ".")]
    while pending:
        anchor, rel = pending.pop()
        try:
            fd = os.open(rel, _DIR, dir_fd=anchor.fd)
        except OSError:
            continue
        subdirs: list[str] = []
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if stat.S_ISDIR(st.st_mode):
                        subdirs.append(entry.name)
            if len(rel) > _SHORT and subdirs:  # start a new anchor here
                anchor, rel = _Anchor(os.dup(fd)), "."
        finally:
            os.close(fd)
        pending.extend((anchor, f"{rel}/{name}") for name in subdirs)
    return total
