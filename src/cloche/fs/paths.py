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
``walk_in_root`` is that walk for any last component, making what is missing through a
callback (the sandbox's mount points), and ``open_dir_strict`` the walk that follows no
symlink at all (undoing what a walk made).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Sequence
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


# A callback that makes a missing entry of a walk: (parent directory fd, name, whether it is
# a directory, the entry's resolved components below the root). It may raise to refuse.
Maker = Callable[[int, str, bool, tuple[str, ...]], None]
_ENTRY_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def make_entry(parent_fd: int, name: str, is_dir: bool, parts: tuple[str, ...]) -> None:
    """The plain ``Maker``: a directory 0755 or an empty file 0644, whatever the umask."""
    if is_dir:
        os.mkdir(name, 0o755, dir_fd=parent_fd)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=parent_fd)
    else:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=parent_fd)
    try:
        os.fchmod(fd, 0o755 if is_dir else 0o644)
    finally:
        os.close(fd)


def walk_in_root(root_fd: int, path: str, *, make: Maker | None = None,
                 dir_last: bool = True) -> tuple[int, tuple[str, ...]]:
    """An ``O_PATH`` fd of ``path`` below the directory ``root_fd``, and its components once
    resolved; the caller closes the fd.

    The same rule as ``resolve_in_root`` (symlinks followed with the root as ``/``, ``..``
    stopping there), but no path string is ever handed to the kernel: each component is
    opened with ``O_NOFOLLOW`` from its parent's fd, and a symlink is read and walked by this
    loop. A mount met on the way is crossed (the fd is of what is mounted), and a magic link
    of /proc (``/proc/1/root``) is only ever read, never followed, so mounts made on the fd
    (through ``/proc/self/fd/N``) stay inside the root even when /proc is mounted in it.
    A missing component is made by ``make`` (a directory, or, for the last one with
    ``dir_last=False``, a file) and the walk goes on into it; without ``make`` it raises
    NotInRootError, as does a non-directory in the middle of the path.
    """
    fds = [os.dup(root_fd)]
    names: list[str] = []
    todo = [p for p in reversed(path.split("/")) if p not in ("", ".")]
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name == "..":
                if names:
                    os.close(fds.pop())
                    names.pop()
                continue
            last = not todo
            try:
                fd = os.open(name, _ENTRY_FLAGS, dir_fd=fds[-1])
            except FileNotFoundError:
                if make is None:
                    raise NotInRootError(f"{path!r}: {name!r} does not exist inside the root") \
                        from None
                try:
                    make(fds[-1], name, dir_last or not last, (*names, name))
                except FileExistsError:
                    pass  # made meanwhile: open it
                todo.append(name)
                continue
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                os.close(fd)
                links += 1
                if links > MAX_SYMLINKS:
                    raise UnsafePathError(f"too many levels of symbolic links resolving {path!r}")
                target = os.readlink(name, dir_fd=fds[-1])
                if target.startswith("/"):
                    while names:
                        os.close(fds.pop())
                        names.pop()
                todo.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
                continue
            fds.append(fd)
            names.append(name)
            if todo and not stat.S_ISDIR(st.st_mode):
                raise NotInRootError(f"{path!r}: {'/'.join(names)} is not a directory")
        return fds.pop(), tuple(names)
    finally:
        for fd in fds:
            os.close(fd)


def open_dir_strict(root_fd: int, parts: Sequence[str]) -> int | None:
    """A read-only fd of the directory ``parts`` below ``root_fd``, following no symlink at
    all; None when a component is missing, not a directory or a symlink (now). For undoing
    what a walk made: if the way there changed, what is at its end is not ours any more."""
    fd = os.dup(root_fd)
    try:
        for name in parts:
            try:
                nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    return None
                raise
            os.close(fd)
            fd = nxt
        result, fd = fd, -1
        return result
    finally:
        if fd >= 0:
            os.close(fd)
