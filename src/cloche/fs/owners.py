"""Who owns a file of an image tree: the one place cloche sets owners and reads them.

As root (the host's, or root of cloche's user namespace) an owner is the file's own uid and
gid: ``set_owner`` chowns, ``owner_of`` reads the stat. A build that runs as a user who is
not root and may make no user namespace (the chroot isolation mode in an unprivileged
container, docs/isolation.md) cannot chown: ``recording`` is then on (set once at the build's
start) and owners are *recorded* instead, as the xattr ``user.cloche.owner`` = ``"UID:GID"``
on regular files and directories. Reading gives the xattr's ids when it is there, else the
stat's ids with the caller's own uid and gid read as 0 (the caller plays root: what it made
without saying otherwise is root's). Symlinks take no ``user.`` xattr: theirs read as the
caller's, so 0:0.

The xattr is cloche's bookkeeping, never content: layers, copies and content hashes drop it
(``OWNER_XATTR`` is listed where xattrs are copied or written), and the tar extractor never
applies one a tar carries. ``user.`` xattrs obey the file's permission bits (reading needs
read, writing needs write permission, even for the owner): a file of mode 0400 or 0000 gets
the bit it lacks for the moment of the call, then its mode back.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from typing import TypeVar

__all__ = ["OWNER_XATTR", "owner_of", "recorded_owner", "recording", "set_owner",
           "set_recording"]

OWNER_XATTR = "user.cloche.owner"
_VALUE_MAX = 32

# [recording, the caller's uid, the caller's gid]; set once per build (set_recording)
_state: list[int] = [0, 0, 0]
_T = TypeVar("_T")


def set_recording(on: bool) -> None:
    """Turn recording on (owners as xattrs: a build as a user who is not root) or off."""
    _state[:] = [1 if on else 0, os.geteuid(), os.getegid()]


def recording() -> bool:
    """Whether owners are recorded in xattrs rather than set (see the module's docstring)."""
    return bool(_state[0])


def owner_of(path: str | os.PathLike[str], st: os.stat_result) -> tuple[int, int]:
    """The owner (uid, gid) of the entry at ``path`` whose lstat is ``st``."""
    if not _state[0]:
        return st.st_uid, st.st_gid
    mode = st.st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        recorded = _read(os.fspath(path), mode)
        if recorded is not None:
            return recorded
    uid, gid = st.st_uid, st.st_gid
    return (0 if uid == _state[1] else uid), (0 if gid == _state[2] else gid)


def recorded_owner(path: str | os.PathLike[str], st: os.stat_result) -> tuple[int, int] | None:
    """The owner recorded on the entry (its xattr), or None: none recorded, not recording,
    or an entry that takes no record (a symlink)."""
    if not _state[0] or not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return None
    return _read(os.fspath(path), st.st_mode)


def _read(path: str, mode: int) -> tuple[int, int] | None:
    try:
        value = os.getxattr(path, OWNER_XATTR, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP):
            return None
        if e.errno != errno.EACCES:
            raise
        # a mode without the owner's read bit: listing needs no permission, so the mode is
        # changed only when there is something to read
        if OWNER_XATTR not in os.listxattr(path, follow_symlinks=False):
            return None
        value = _with_mode(path, mode, 0o400,
                           lambda: os.getxattr(path, OWNER_XATTR, follow_symlinks=False))
    return _parse(value)


def _parse(value: bytes) -> tuple[int, int] | None:
    """``b"UID:GID"``, decimal; anything else counts as no record."""
    uid, sep, gid = value[:_VALUE_MAX].partition(b":")
    if not sep or not uid.isdigit() or not gid.isdigit():
        return None
    u, g = int(uid), int(gid)
    return (u, g) if u < 1 << 32 and g < 1 << 32 else None


def set_owner(target: str | os.PathLike[str] | int, uid: int, gid: int, *,
              follow_symlinks: bool = False) -> None:
    """Give ``target`` (a path, or a descriptor opened for reading or writing) the owner
    ``uid:gid``: chown when not recording, else record it (a symlink's is not recorded: it
    reads as 0:0). ``follow_symlinks`` as for os.chown; a /proc/self/fd path of an O_PATH
    descriptor is followed to the object it holds."""
    if not _state[0]:
        if isinstance(target, int):
            os.fchown(target, uid, gid)
        else:
            os.chown(target, uid, gid, follow_symlinks=follow_symlinks)
        return
    where: str | int = target if isinstance(target, int) else os.fspath(target)
    follow = follow_symlinks or isinstance(where, int)  # a descriptor: the object it holds
    value = f"{uid}:{gid}".encode()
    try:
        os.setxattr(where, OWNER_XATTR, value, follow_symlinks=follow)
        return
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EACCES):
            raise
        err = e
    st = os.stat(where, follow_symlinks=follow)
    mode = st.st_mode
    if err.errno == errno.EPERM:
        if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return  # user xattrs exist on files and directories only: read as the caller's
        raise err
    _with_mode(where, mode, 0o200, lambda: os.setxattr(
        where, OWNER_XATTR, value, follow_symlinks=follow))


def _with_mode(where: str | int, mode: int, bit: int, call: Callable[[], _T]) -> _T:
    """``call()`` with the owner's ``bit`` added to the mode for its duration."""
    if isinstance(where, int):
        os.fchmod(where, stat.S_IMODE(mode) | bit)
    else:
        os.chmod(where, stat.S_IMODE(mode) | bit)
    try:
        return call()
    finally:
        if isinstance(where, int):
            os.fchmod(where, stat.S_IMODE(mode))
        else:
            os.chmod(where, stat.S_IMODE(mode))
