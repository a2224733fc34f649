"""Mounts made on file descriptors, and binds whose flags hold all the way down.

The init mounts onto the fd of a mount point that a no-follow walk inside the rootfs opened
(``Root.point``, through ``cloche.fs.paths.walk_in_root``), never onto a path string: once
/proc is mounted in the rootfs, ``/proc/1/root`` is the host's root, and a path string (or a
symlink an image planted on the way) would lead a mount, or the mount point made for it, out
of the rootfs. The kernel is handed ``/proc/self/fd/N`` of the walked fd instead.

Binds use the new mount API where the kernel has it (5.12 and later): ``open_tree`` clones
the source with everything mounted below it, ``mount_setattr`` sets the attributes
(read-only, nodev...) on every mount of the clone (``AT_RECURSIVE``: a submount below a
read-only bind source is read-only too, which a remount of the top mount does not give) before
the clone is attached anywhere, and ``move_mount`` attaches it on the fd. Older kernels get a
recursive bind through ``/proc/self/fd/N`` and a remount of each mount of it.

Standard library only (and ``cloche.fs.paths``): the init imports it for every step.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass, field

from cloche.errors import ClocheError
from cloche.fs.paths import NotInRootError, make_entry, walk_in_root
from cloche.sandbox import linux

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# The new mount API has one syscall number on every architecture (asm-generic and x86_64).
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 0x1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
READ_ONLY = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC

_MS_OF_ATTR = {MOUNT_ATTR_RDONLY: linux.MS_RDONLY, MOUNT_ATTR_NOSUID: linux.MS_NOSUID,
               MOUNT_ATTR_NODEV: linux.MS_NODEV, MOUNT_ATTR_NOEXEC: linux.MS_NOEXEC}
# per-mount options of /proc/self/mountinfo that a bind remount must keep
_MS_OF_OPTION = {"ro": linux.MS_RDONLY, "nosuid": linux.MS_NOSUID, "nodev": linux.MS_NODEV,
                 "noexec": linux.MS_NOEXEC, "noatime": 0x400, "nodiratime": 0x800,
                 "relatime": 0x200000, "strictatime": 0x1000000}


class MountPointError(ClocheError):
    """A mount point that cannot be used (inside /proc or /sys, or in the way of a file)."""


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def fd_path(fd: int) -> str:
    """The path through which the kernel reaches exactly what ``fd`` is (a magic link)."""
    return f"/proc/self/fd/{fd}"


def _syscall(what: str, number: int, *args: object) -> int:
    result = int(_libc.syscall(ctypes.c_long(number), *args))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def open_tree(path: str, flags: int) -> int:
    """open_tree(2) of a path (absolute, or relative to the cwd)."""
    return _syscall("open_tree", SYS_OPEN_TREE, ctypes.c_int(AT_FDCWD), os.fsencode(path),
                    ctypes.c_uint(flags))


def move_mount(tree_fd: int, target_fd: int) -> None:
    """move_mount(2) of the detached tree ``tree_fd`` onto what ``target_fd`` is."""
    _syscall("move_mount", SYS_MOVE_MOUNT, ctypes.c_int(tree_fd), b"", ctypes.c_int(target_fd),
             b"", ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH))


def mount_setattr(fd: int, attrs: int, *, recursive: bool) -> None:
    """mount_setattr(2): set ``attrs`` (MOUNT_ATTR_*) on the mount ``fd`` is the root of."""
    attr = _MountAttr(attrs, 0, 0, 0)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    _syscall("mount_setattr", SYS_MOUNT_SETATTR, ctypes.c_int(fd), b"", ctypes.c_uint(flags),
             ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))


def _ms_flags(attrs: int) -> int:
    return sum(flag for attr, flag in _MS_OF_ATTR.items() if attrs & attr)


def bind(source: str, target_fd: int, attrs: int) -> None:
    """Bind ``source`` and every mount below it on the mount point ``target_fd``, with
    ``attrs`` (MOUNT_ATTR_*) set on each of those mounts."""
    try:
        tree = open_tree(source, OPEN_TREE_CLONE | os.O_CLOEXEC | AT_RECURSIVE)
    except OSError as e:
        if e.errno != errno.ENOSYS:
            raise
        bind_classic(source, target_fd, attrs)
        return
    try:
        if attrs:
            try:
                mount_setattr(tree, attrs, recursive=True)
            except OSError as e:
                if e.errno != errno.ENOSYS:
                    raise
                bind_classic(source, target_fd, attrs)
                return
        move_mount(tree, target_fd)
    finally:
        os.close(tree)


def bind_classic(source: str, target_fd: int, attrs: int) -> None:
    """``bind`` with mount(2) alone (kernels before 5.12): a recursive bind, then a remount
    of each of its mounts (read from /proc/self/mountinfo), parents first."""
    base = os.readlink(fd_path(target_fd))  # where the new mounts appear
    linux.mount(source, fd_path(target_fd), None, linux.MS_BIND | linux.MS_REC)
    if attrs:
        remount_below(base, attrs)


def set_attrs(fd: int, attrs: int) -> None:
    """Add ``attrs`` to the mount ``fd`` is the root of and to every mount below it."""
    try:
        mount_setattr(fd, attrs, recursive=True)
    except OSError as e:
        if e.errno != errno.ENOSYS:
            raise
        remount_below(os.readlink(fd_path(fd)), attrs)


def remount_below(base: str, attrs: int) -> None:
    """Remount the mounts at ``base`` and below with ``attrs`` added to their own flags."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        lines = f.read().splitlines()
    for line in lines:
        fields = line.split(" ")
        point = _unescape(fields[4])
        if point != base and not point.startswith(base.rstrip("/") + "/"):
            continue
        own = sum(_MS_OF_OPTION.get(o, 0) for o in fields[5].split(","))
        linux.mount(None, point, None, linux.MS_REMOUNT | linux.MS_BIND | own | _ms_flags(attrs))


def _unescape(field: str) -> str:
    """A mountinfo path: spaces, tabs, newlines and backslashes are written as ``\\ooo``."""
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


@dataclass
class Root:
    """The rootfs being set up: an fd of its (bound) root, and the devices of the kernel file
    systems mounted in it, on which no mount point may be."""

    path: str
    fd: int
    refused: set[int] = field(default_factory=set)

    def point(self, host_target: str, *, is_dir: bool, what: str) -> int:
        """An ``O_PATH`` fd of the mount point ``host_target`` (a host path below the root,
        made by the runner as a stub), walked again from the root fd with no symlink
        followed out of it; made when missing (it is hidden by a mount made since, such as
        /dev/pipes under /dev's tmpfs, and is then made on that mount)."""
        rel = os.path.relpath(host_target, self.path)
        if rel == ".." or rel.startswith("../"):
            raise MountPointError(f"{what}: {host_target} is not in the root filesystem")
        try:
            fd, _ = walk_in_root(self.fd, rel, make=make_entry, dir_last=is_dir)
        except (ClocheError, OSError) as e:
            text = e.strerror if isinstance(e, OSError) else str(e)
            raise MountPointError(f"{what}: cannot make its mount point: {text}") from e
        if os.fstat(fd).st_dev in self.refused:
            os.close(fd)
            raise MountPointError(f"{what}: the mount point is inside /proc or /sys")
        return fd

    def refuse_below(self, host_target: str) -> None:
        """No mount point may be on the file system now mounted at ``host_target``."""
        try:
            fd, _ = walk_in_root(self.fd, os.path.relpath(host_target, self.path))
        except NotInRootError:
            return
        try:
            self.refused.add(os.fstat(fd).st_dev)
        finally:
            os.close(fd)
