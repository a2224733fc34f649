"""Low-level file operations inside a root directory that cannot lead outside it.

The engine hands COPY/ADD the merged overlay directory of a stage: anything in it may have come
from an image anyone wrote, so a destination is first resolved the way the kernel would after a
chroot (``cloche.fs.paths.resolve_in_root``), and every operation on a final component
then works on that component itself (``lstat``, ``O_NOFOLLOW``, ``lchown``, no-follow utime),
never through a symlink. Modes are always set explicitly: the process umask must not leak
into a layer.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cloche.errors import ClocheError, UnsafePathError
from cloche.fs.owners import OWNER_XATTR, set_owner
from cloche.fs.paths import inside, resolve_in_root

__all__ = ["CopyIOError", "CopyTargetError", "Owner", "copy_fd_data", "copy_fd_xattrs",
           "copy_file_data", "copy_xattrs",
           "mkdir_all", "remove_for_replace", "resolve_dest", "set_metadata"]

_CHUNK = 1 << 20


class CopyTargetError(ClocheError, ValueError):
    """A destination that cannot receive what is copied (a file over a directory...)."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class CopyIOError(ClocheError):
    """A file that could not be read or written while copying (permissions, disk full...)."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class Owner:
    """Numeric ownership for copied files."""

    uid: int
    gid: int


def resolve_dest(root: Path, path: str | PurePosixPath, *, follow_last: bool = True) -> Path:
    """The host path for ``path`` in the rootfs ``root``, symlinks resolved as if chrooted."""
    host = resolve_in_root(root, path, follow_last=follow_last)
    if not inside(root, host):  # resolve_in_root guarantees it; keep the invariant explicit
        raise UnsafePathError(f"{path} resolves outside of {root}")
    return host


def mkdir_all(root: Path, host: Path, *, mode: int = 0o755, owner: Owner | None = None,
              mtime_ns: int | None = None) -> list[Path]:
    """Create ``host`` (already resolved below ``root``) and its missing parents.

    New directories get ``mode`` exactly, ``owner`` when given, and ``mtime_ns`` when given;
    existing ones are left as they are. A non-directory in the way is an error naming it.
    Returns the directories created, top first.
    """
    if not inside(root, host):
        raise UnsafePathError(f"{host} is outside of {root}")
    missing: list[Path] = []
    cur = host
    while cur != root:
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            missing.append(cur)
            cur = cur.parent
            continue
        if not stat.S_ISDIR(st.st_mode):
            rel = "/" + str(cur.relative_to(root))
            raise CopyTargetError(f"cannot create directory {rel}: a non-directory is in the way",
                                  path=rel)
        break
    created = []
    for d in reversed(missing):
        os.mkdir(d, 0o700)
        set_metadata(d, mode=mode, owner=owner, mtime_ns=mtime_ns)
        created.append(d)
    return created


def set_metadata(host: Path, *, mode: int | None, owner: Owner | None,
                 mtime_ns: int | None, is_link: bool = False) -> None:
    """Owner first (chown clears set-id bits), then mode, then times; never follows a link."""
    if owner is not None:
        set_owner(host, owner.uid, owner.gid)  # or recorded (cloche.fs.owners)
    if mode is not None and not is_link:
        _chmod_nofollow(host, mode)
    if mtime_ns is not None:
        os.utime(host, ns=(mtime_ns, mtime_ns), follow_symlinks=False)


def _chmod_nofollow(host: Path, mode: int) -> None:
    fd = os.open(host, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        # fchmod does not work on O_PATH descriptors; /proc/self/fd does, on the object itself.
        os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(mode))
    except FileNotFoundError:
        os.chmod(host, stat.S_IMODE(mode))
    finally:
        os.close(fd)


def remove_for_replace(host: Path, display: str, *, new_is_dir: bool) -> bool:
    """Make room for a new entry at ``host``; returns True when a directory is already there.

    BuildKit's rules: a file or link replaces a file or link; a directory merges into a
    directory; a file over a directory, or a directory over a non-directory, is an error.
    """
    try:
        st = os.lstat(host)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        if new_is_dir:
            return True
        raise CopyTargetError(f"cannot replace directory {display} with a file", path=display)
    if new_is_dir:
        raise CopyTargetError(f"cannot copy to non-directory: {display}", path=display)
    os.unlink(host)
    return False


def copy_file_data(src_fd: int, dst: Path) -> None:
    """Stream what is left of an open source into a new file at ``dst`` (no follow)."""
    out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        copy_fd_data(src_fd, out, -1)
    finally:
        os.close(out)


def copy_fd_data(src_fd: int, out: int, size: int) -> None:
    """Copy an open file's content to another; small files (``size`` known and at most 1 MiB)
    in one read and one write, others with copy_file_range."""
    if 0 <= size <= _CHUNK:
        data = os.read(src_fd, size + 1)
        while data:
            written = os.write(out, data)
            data = data[written:]
            if not data:
                data = os.read(src_fd, _CHUNK)  # the file grew while being copied
        return
    while True:
        try:
            sent = os.copy_file_range(src_fd, out, _CHUNK)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            sent = os.sendfile(out, src_fd, None, _CHUNK)
        if sent == 0:
            break


def copy_fd_xattrs(src_fd: int, out: int) -> None:
    """``copy_xattrs`` between open descriptors."""
    try:
        names = os.listxattr(src_fd)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    for name in names:
        if name.startswith(("system.", "trusted.overlay.", "user.overlay.")) \
                or name == OWNER_XATTR:
            continue
        try:
            os.setxattr(out, name, os.getxattr(src_fd, name))
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                raise


def copy_xattrs(src: Path, dst: Path) -> None:
    """Copy extended attributes (file capabilities included), never through a link."""
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    for name in names:
        if name.startswith(("system.", "trusted.overlay.", "user.overlay.")) \
                or name == OWNER_XATTR:
            continue  # ACL mirrors, overlayfs' and cloche's own bookkeeping are not content
        try:
            value = os.getxattr(src, name, follow_symlinks=False)
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                raise
