"""The extractor's last directory, kept open: parents of tar entries found in O(1), not O(depth).

``paths.open_dir_at`` walks from the root one component at a time, which is right but costs
the depth of the entry; a layer of a 5,000-level tree then takes 12 million ``openat`` calls,
and setting each directory's metadata at the end as many again. Tar entries come in tree
order, so the parent of the next entry is almost always the last directory opened, one of
its children, or one of its ancestors. ``DirCache`` keeps that directory's fd and moves from
it: down by real directories (``O_NOFOLLOW``; creating missing ones as ``open_dir_at`` does),
up by ``..``, never above the root (it counts the levels). At a symlink, or when nothing is
cached, it hands over to ``open_dir_at`` from the root, which resolves links inside it.

The owner must call ``forget`` whenever it deletes or replaces anything (a ``..`` or a
cached fd must never lead into a directory that was moved or removed); only the extractor
writes in its destination while it runs.
"""

from __future__ import annotations

import errno
import os

from cloche.fs.paths import open_dir_at

__all__ = ["DirCache"]

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parts(path: str) -> list[str]:
    return path.split("/") if path else []


class DirCache:
    """Open directories below ``root_fd`` by path (clean, relative); see the module docstring."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self._path: list[str] | None = None
        self._fd = -1

    def forget(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._path, self._fd = None, -1

    close = forget

    def open(self, path: str, *, create: bool, what: str) -> int:
        """An O_PATH fd of directory ``path`` (the caller closes it), as ``open_dir_at``."""
        want = _parts(path)
        fd = self._from_cache(want, create)
        if fd is None:
            fd = open_dir_at(self.root_fd, path, create=create, what=what)
        self.forget()
        self._path, self._fd = want, os.dup(fd)
        return fd

    def _from_cache(self, want: list[str], create: bool) -> int | None:
        have = self._path
        if have is None:
            return None
        common = 0
        for a, b in zip(have, want):
            if a != b:
                break
            common += 1
        up = len(have) - common
        if up > common:
            return None  # far away: the walk from the root is as short
        fd = os.dup(self._fd)
        try:
            for _ in range(up):  # within the tree: ``have`` is that many levels below
                parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = parent
            for name in want[common:]:
                child = self._child(fd, name, create)
                if child is None:
                    os.close(fd)
                    return None
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _child(fd: int, name: str, create: bool) -> int | None:
        """``name`` below ``fd`` if it is a real directory (made when missing and ``create``);
        None for anything open_dir_at must decide (a symlink, a file, a missing one)."""
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                return None
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                return None
            raise
        os.mkdir(name, 0o755, dir_fd=fd)
        child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        os.chmod(f"/proc/self/fd/{child}", 0o755)  # whatever the umask
        return child
