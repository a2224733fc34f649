"""Opening a file that a build context names: only a regular file, and never outside its root.

A context (or a tar on stdin) is written by whoever wrote the pull request: its Dockerfile or
.dockerignore may be a symlink to a host file (whose first line a parse error would print), a
FIFO (an open that never returns) or a device (an open with side effects). Files read for the
build are therefore resolved inside their root as if chrooted (``paths.resolve_in_root``, as
BuildKit's fsutil resolves FollowPaths: an absolute target restarts at the root, '..' stops
there), checked with lstat before any open, and opened with O_NOFOLLOW and O_NONBLOCK so that
a file swapped in between can neither lead out nor block; the fd is checked again.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from cloche.errors import ClocheError
from cloche.fs.paths import resolve_in_root

__all__ = ["NotRegularFileError", "open_regular", "read_regular_in_root", "regular_in_root"]

_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symlink"}


class NotRegularFileError(ClocheError, ValueError):
    """A file to read that is a directory, FIFO, device or socket."""


def kind_of(mode: int) -> str:
    """How an error names a file type (``a FIFO``)."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def open_regular(host: str | os.PathLike[str], *, what: str) -> int:
    """A read-only fd of ``host`` (its last component not followed) if it is a regular file.

    Raises FileNotFoundError when it is missing and NotRegularFileError (naming ``what``) for
    any other type; a FIFO or a device is never opened.
    """
    st = os.lstat(host)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(f"{what} is {kind_of(st.st_mode)}, not a regular file")
    fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped after the lstat
            raise NotRegularFileError(f"{what} is {kind_of(st.st_mode)}, not a regular file")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def regular_in_root(root: Path, path: str | PurePosixPath) -> Path | None:
    """The host path of ``path`` inside ``root`` (symlinks confined) when it is a regular file,
    else None (missing, or another type)."""
    host = resolve_in_root(root, path)
    try:
        return host if stat.S_ISREG(os.lstat(host).st_mode) else None
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_regular_in_root(root: Path, path: str | PurePosixPath, *, what: str) -> bytes:
    """The bytes of ``path`` inside ``root``, symlinks resolved inside it; see ``open_regular``.

    Raises FileNotFoundError (also for a link whose confined target is missing) and
    NotRegularFileError.
    """
    host = resolve_in_root(root, path)
    try:
        fd = open_regular(host, what=what)
    except NotADirectoryError:
        raise FileNotFoundError(f"{what}: no such file") from None
    with os.fdopen(fd, "rb") as f:
        return f.read()
