"""Resolve a path inside a root filesystem as the container would see it, never outside it.

A RUN step's rootfs comes from image layers, which anyone may have written: ``/etc/passwd``
can be a symlink to ``/../../host/file`` and a mount target can be a symlink pointing out of
the rootfs. Every path the sandbox reads or creates in a rootfs therefore goes through
``resolve_in_root``, which follows symlinks the way the kernel would after a chroot: absolute
link targets restart at the root and ``..`` stops at the root.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

from cloche.errors import UnsafePathError

MAX_SYMLINKS = 40  # the kernel's limit (ELOOP)


def resolve_in_root(root: Path, path: str | PurePosixPath, *, follow_last: bool = True) -> Path:
    """The host path of ``path`` (absolute or relative to ``/``) inside ``root``.

    Symlinks are followed with ``root`` as ``/``; the result is always ``root`` or below it.
    Components that do not exist are appended as they are. With ``follow_last=False`` a
    symlink in the last component is returned itself (as ``lstat`` would see it).
    """
    pending = [p for p in str(path).split("/") if p not in ("", ".")]
    pending.reverse()  # a stack: the next component is at the end
    done: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if not pending and not follow_last:
            done.append(part)
            break
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            done.append(part)
            continue
        except NotADirectoryError:
            done.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            done.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise UnsafePathError(f"too many levels of symbolic links resolving {path} in {root}")
        target = os.readlink(candidate)
        if target.startswith("/"):
            done = []
        more = [p for p in target.split("/") if p not in ("", ".")]
        pending.extend(reversed(more))
    return root.joinpath(*done)


def open_in_root(root: Path, path: str | PurePosixPath) -> int:
    """A read-only file descriptor for ``path`` inside ``root`` (symlinks confined).

    The last component is opened with O_NOFOLLOW so that a symlink swapped in after the
    resolution cannot lead outside. Raises FileNotFoundError when it is missing.
    """
    host = resolve_in_root(root, path)
    try:
        return os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePathError(f"{path} in {root} changed into a symlink while opening it") from e
        raise
