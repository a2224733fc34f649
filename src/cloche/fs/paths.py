"""Resolve a path inside a root filesystem as the container would see it, never outside it.

A rootfs comes from image layers, which anyone may have written: ``/etc/passwd`` can be a
symlink to ``/../../host/file`` and a mount target or a COPY destination can be a symlink
pointing out of the rootfs. Every path cloche reads or creates in a rootfs (RUN's mounts,
COPY/ADD destinations, USER lookups, tar extraction) goes through this module, which follows
symlinks the way the kernel would after a chroot: absolute link targets restart at the root and
``..`` stops at the root.

Two forms of the same rule: ``resolve_in_root`` gives a host path (for code that then works
with no-follow calls on the last component), ``open_dir_at`` walks from a directory fd one
component at a time with ``O_NOFOLLOW``, so that no path is ever re-resolved by the kernel
outside the walk (the extractor uses it: a tar may swap a parent for a symlink mid-stream).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

from cloche.errors import ClocheError, UnsafePathError

MAX_SYMLINKS = 40  # the kernel's limit (ELOOP)
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class NotInRootError(ClocheError, ValueError):
    """A directory that ``open_dir_at`` should find without creating it is missing, or a
    component of its path is not a directory."""


def inside(root: Path, host: Path) -> bool:
    """Whether ``host`` is ``root`` or below it (lexically; both already resolved)."""
    return host == root or root in host.parents


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


def open_dir_at(root_fd: int, rel: str, *, create: bool, what: str) -> int:
    """An O_PATH fd of directory ``rel`` below the directory ``root_fd``, symlinks resolved
    inside it as if it were ``/``; the caller closes it.

    Each component is opened with O_NOFOLLOW from its parent's fd: a symlink is read and its
    target walked in turn (absolute targets restart at the root, ``..`` stops there). With
    ``create`` missing directories are made (mode 0755 whatever the umask); without it, a
    missing one raises NotInRootError. A non-directory in the way raises NotInRootError too.
    """
    fds = [os.dup(root_fd)]
    todo = list(reversed(rel.split("/")))
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name in ("", "."):
                continue
            if name == "..":
                if len(fds) > 1:
                    os.close(fds.pop())
                continue
            cur = fds[-1]
            try:
                fds.append(os.open(name, _DIR_FLAGS, dir_fd=cur))
                continue
            except FileNotFoundError:
                if not create:
                    raise NotInRootError(f"{what}: {rel!r} does not exist inside the root") \
                        from None
                os.mkdir(name, 0o755, dir_fd=cur)
                fds.append(os.open(name, _DIR_FLAGS, dir_fd=cur))
                os.chmod(f"/proc/self/fd/{fds[-1]}", 0o755)  # whatever the umask
                continue
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
            st = os.stat(name, dir_fd=cur, follow_symlinks=False)
            if not stat.S_ISLNK(st.st_mode):
                raise NotInRootError(f"{what}: {name!r} in {rel!r} is not a directory")
            links += 1
            if links > MAX_SYMLINKS:
                raise UnsafePathError(f"{what}: too many levels of symbolic links resolving "
                                      f"{rel!r}")
            target = os.readlink(name, dir_fd=cur)
            if target.startswith("/"):
                while len(fds) > 1:
                    os.close(fds.pop())
            todo.extend(reversed(target.split("/")))
        return fds.pop()
    finally:
        for fd in fds:
            os.close(fd)
