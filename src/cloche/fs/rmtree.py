"""Delete a directory tree of any depth: iterative, two fds at a time, never following a link.

A RUN step or a layer can make a tree as deep as it likes (``mkdir d && cd d`` in a loop).
Python 3.11's ``shutil.rmtree`` recurses once per level (RecursionError near 1,000 levels,
which ``ignore_errors`` does not catch) and holds one fd per level (EMFILE), and its path
strings pass PATH_MAX (4,096 bytes) near 2,000 levels of one-letter names; ``cloche prune``
then crashed for good. This one flattens the tree instead: each directory directly in the
top one is emptied by unlinking its files and *renaming* its subdirectories up into the top
directory, then removed; the pass repeats until the top is empty. No path is ever longer
than one name, only two directories are open at once, and every directory is renamed at
most once, so the work is linear in the number of entries.

Symlinks are removed, never followed (the top itself included: a link is unlinked). A
directory on another file system (a mount point below the tree) is never entered: it is an
error (or, with ``ignore_errors``, left in place), as ``rm --one-file-system`` does.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["rmtree"]

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def rmtree(path: str | Path, ignore_errors: bool = False, *, dir_fd: int | None = None) -> None:
    """Delete ``path`` and everything below it; a missing ``path`` is not an error.

    Same calling convention as ``shutil.rmtree(path, ignore_errors)`` (so it can stand in
    for it in ``ExitStack.callback``), plus ``dir_fd`` for a name relative to a directory.
    With ``ignore_errors`` whatever cannot be deleted is left and no OSError is raised.
    """
    try:
        _rmtree(os.fspath(path), dir_fd, ignore_errors)
    except OSError:
        if not ignore_errors:
            raise


def _rmtree(path: str, dir_fd: int | None, ignore_errors: bool) -> None:
    try:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path, dir_fd=dir_fd)
        return
    top = _open_dir(path, dir_fd)
    try:
        if (os.fstat(top).st_ino, os.fstat(top).st_dev) != (st.st_ino, st.st_dev):
            raise OSError(errno.EAGAIN, "directory replaced while deleting it", path)
        _empty(top, st.st_dev, ignore_errors)
    finally:
        os.close(top)
    os.rmdir(path, dir_fd=dir_fd)


def _open_dir(name: str, dir_fd: int | None) -> int:
    """Open a directory to empty it. A user who is not root (the chroot isolation mode, where
    every file is the user's) first gives its own directory the read, write and search bits
    its mode may lack (0555, 0000): root needs none of them."""
    try:
        fd = os.open(name, _DIR, dir_fd=dir_fd)
    except PermissionError:
        if os.geteuid() == 0:
            raise
        os.chmod(name, 0o700, dir_fd=dir_fd)  # a directory (never a link: O_NOFOLLOW said so)
        fd = os.open(name, _DIR, dir_fd=dir_fd)
    if os.geteuid() != 0:
        st = os.fstat(fd)
        if st.st_mode & 0o700 != 0o700 and st.st_uid == os.geteuid():
            os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)
    return fd


def _names(fd: int) -> list[tuple[str, bool]]:
    """(name, is a directory) of each entry of the directory open as ``fd``."""
    with os.scandir(fd) as it:  # works on a duplicate, rewound: fd stays usable
        return [(e.name, e.is_dir(follow_symlinks=False)) for e in it]


class _Flattener:
    """Moves subdirectories up into the top directory under fresh names."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.counter = 0

    def fresh_name(self) -> str:
        while True:
            self.counter += 1
            name = f".cloche-rm-{self.counter}"
            try:
                os.stat(name, dir_fd=self.top, follow_symlinks=False)
            except FileNotFoundError:
                return name


def _empty(top: int, dev: int, ignore_errors: bool) -> None:
    """Delete everything in the directory open as ``top`` (on device ``dev``)."""
    flat = _Flattener(top)
    stuck: set[str] = set()  # what could not be deleted (ignore_errors): not tried again
    while True:
        progress = False
        for name, is_dir in _names(top):
            if name in stuck:
                continue
            try:
                if is_dir:
                    _empty_one_level(top, name, dev, flat)
                    os.rmdir(name, dir_fd=top)
                else:
                    os.unlink(name, dir_fd=top)
                progress = True
            except FileNotFoundError:
                progress = True
            except OSError:
                if not ignore_errors:
                    raise
                stuck.add(name)
        if not progress:
            return


def _empty_one_level(top: int, name: str, dev: int, flat: _Flattener) -> None:
    """Unlink the files of ``top/name`` and move its subdirectories up into ``top``."""
    sub = _open_dir(name, top)
    try:
        if os.fstat(sub).st_dev != dev:
            raise OSError(errno.EXDEV, "a mount point: not entered", name)
        for child, is_dir in _names(sub):
            if is_dir:
                os.rename(child, flat.fresh_name(), src_dir_fd=sub, dst_dir_fd=top)
            else:
                os.unlink(child, dir_fd=sub)
    finally:
        os.close(sub)
