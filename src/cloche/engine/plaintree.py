"""A stage's root filesystem as a plain directory, for the chroot isolation mode.

Without mounts there is no overlayfs: a step works on a plain directory (the *tree*) that
holds the stage's lowers applied one over the other, and its change is found afterwards by
comparing the tree with an index of it taken before the step. That change is written as an
upper directory in overlayfs' own format (what the rest of the engine reads: layers/diff.py,
the build cache, later steps' lowers): a deleted path is a 0/0 character device, a directory
that replaced what was there is opaque, and every changed entry's parent directories are
there with the tree's metadata, as overlayfs copies them up.

An entry counts as changed when its inode, type, ctime, mtime, size, mode or owner differs
from the index (a write, chmod, chown, xattr or link changes the ctime). Files are copied
with a reflink when the file system can (FICLONE), else with copy_file_range; never hard
linked, which would let a later step change a snapshot. Walks are iterative: a tree may be
as deep as a step makes it. Paths are used (not descriptors): a path longer than PATH_MAX
fails with ENAMETOOLONG.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from cloche.fs.owners import OWNER_XATTR, owner_of, recorded_owner, recording, set_owner
from cloche.fs.rmtree import rmtree
from cloche.layers.diff import is_opaque_dir, is_whiteout
from cloche.sandbox.limits import raise_nofile_limit

_OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")
_FICLONE = 0x40049409

Index = dict[str, tuple[int, int, int, int, int, int, int, int]]

def _is_root() -> bool:
    return os.geteuid() == 0


def _copy_data(src: str, dst: str) -> None:
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                       0o600)
        try:
            try:
                fcntl.ioctl(fout, _FICLONE, fin)
                return
            except OSError:
                pass
            size = os.fstat(fin).st_size
            offset = 0
            while offset < size:
                try:
                    n = os.copy_file_range(fin, fout, size - offset, offset, offset)
                except OSError as e:
                    if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                        raise
                    n = _copy_read_write(fin, fout, offset)
                if n == 0:
                    break
                offset += n
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _copy_read_write(fin: int, fout: int, offset: int) -> int:
    data = os.pread(fin, 1 << 20, offset)
    view = memoryview(data)
    at = offset
    while view:
        written = os.pwrite(fout, view, at)
        view, at = view[written:], at + written
    return len(data)


def _xattrs(src: str, dst: str) -> None:
    """Copy the xattrs but overlayfs' own (links not followed); unsupported ones are dropped."""
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        if name.startswith(_OVERLAY_XATTRS) or name == OWNER_XATTR:  # the owner: see _meta
            continue
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False),
                        follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.ENODATA):
                raise


def _meta(src: str, dst: str, st: os.stat_result) -> None:
    """Owner, xattrs, mode and times of ``src`` (stat ``st``) onto ``dst``, in the order that
    keeps them (chown clears setuid bits and file capabilities)."""
    is_link = stat.S_ISLNK(st.st_mode)
    if _is_root() or recording():  # recorded where it cannot be set (cloche.fs.owners)
        set_owner(dst, *owner_of(src, st))
    _xattrs(src, dst)
    if not is_link:
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_entry(src: str, dst: str, st: os.stat_result, links: dict[tuple[int, int], str]) -> None:
    """Copy one non-directory entry; hard links among the copied files are kept."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        if st.st_nlink > 1:
            first = links.get((st.st_dev, st.st_ino))
            if first is not None:
                os.link(first, dst)
                return
            links[(st.st_dev, st.st_ino)] = dst
        _copy_data(src, dst)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
        try:
            os.mknod(dst, stat.S_IFMT(mode) | 0o600, st.st_rdev)
        except PermissionError:
            if stat.S_ISFIFO(mode) or not recording():
                raise
            return  # no device without root: left out, as when a base image is unpacked
    else:
        return  # a socket: not part of a layer
    _meta(src, dst, st)


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        rmtree(path)
    else:
        os.unlink(path)


def apply_upper(tree: Path, layer: Path) -> None:
    """Apply an upper directory (overlay format) onto ``tree``, as overlayfs shows it."""
    links: dict[tuple[int, int], str] = {}
    dirs: list[tuple[str, str, os.stat_result]] = []
    pending = [""]
    top_mode = _may_write(str(tree)) if recording() else None
    while pending:
        rel = pending.pop()
        if rel and recording():
            _may_write(os.path.join(tree, rel))  # its mode comes back with _meta below
        with os.scandir(os.path.join(layer, rel)) as it:
            entries = list(it)
        for entry in entries:
            r = os.path.join(rel, entry.name)
            src, dst = entry.path, os.path.join(tree, r)
            st = entry.stat(follow_symlinks=False)
            if is_whiteout(src, st):
                _remove(dst)
                continue
            if stat.S_ISDIR(st.st_mode):
                try:
                    there: os.stat_result | None = os.lstat(dst)
                except FileNotFoundError:
                    there = None
                if there is not None and (not stat.S_ISDIR(there.st_mode) or is_opaque_dir(src)):
                    _remove(dst)
                    there = None
                if there is None:
                    os.mkdir(dst, 0o700)
                dirs.append((src, dst, st))
                pending.append(r)
                continue
            _remove(dst)
            _copy_entry(src, dst, st, links)
    for src, dst, st in reversed(dirs):
        _meta(src, dst, st)
    if top_mode is not None:
        os.chmod(tree, top_mode)


def _may_write(path: str) -> int | None:
    """Without root (owners recorded), a directory of the tree whose mode denies its owner,
    the caller, writing or searching (0555) gets u+rwx for what is applied into it; its mode
    before, or None when it had them."""
    mode = stat.S_IMODE(os.lstat(path).st_mode)
    if mode & 0o700 == 0o700:
        return None
    os.chmod(path, mode | 0o700)
    return mode


def materialize(lowers: Sequence[Path], tree: Path, *, base: Path | None = None) -> None:
    """Make ``tree`` (absent, or ``base``'s contents already there) hold ``lowers`` (top
    first) applied bottom up."""
    if base is None:
        os.mkdir(tree, 0o755)
    for layer in reversed(lowers):
        apply_upper(tree, layer)
    if lowers and base is None:
        st = os.lstat(lowers[-1])
        _meta(str(lowers[-1]), str(tree), st)


def index(tree: Path, pins: list[int], *,
          unlock: list[tuple[str, int, int]] | None = None) -> Index:
    """What a later ``diff`` compares with: each entry's inode, type and metadata.

    Each directory is held open (``pins``, for the caller to close after ``diff``): a
    directory removed and made again during the step then cannot get the inode number it
    had, which file systems otherwise hand out again at once (``rm -rf d; mkdir d`` must
    make ``d`` opaque, as overlayfs does). Past the process's descriptor limit the rest of
    the directories are not held; the merged result is the same, the layer may then list
    whiteouts where overlayfs would have made the directory opaque.

    ``unlock`` (a build without root, before a step that cloche itself writes): each directory
    whose mode denies its owner, the caller, any of rwx (0555) gets them, and is listed as
    (path, mode, mode given) for ``relock`` to take them back after the step."""
    result: Index = {}
    _raise_fd_limit()
    pending = [""]
    while pending:
        rel = pending.pop()
        with os.scandir(os.path.join(tree, rel)) as it:
            for entry in it:
                r = os.path.join(rel, entry.name)
                st = entry.stat(follow_symlinks=False)
                if unlock is not None and stat.S_ISDIR(st.st_mode) and \
                        st.st_mode & 0o700 != 0o700:
                    mode = stat.S_IMODE(st.st_mode)
                    os.chmod(entry.path, mode | 0o700)
                    unlock.append((r, mode, mode | 0o700))
                    st = os.lstat(entry.path)
                result[r] = _key(st)
                if stat.S_ISDIR(st.st_mode):
                    pending.append(r)
                    try:
                        pins.append(os.open(entry.path, os.O_PATH | os.O_DIRECTORY
                                            | os.O_NOFOLLOW | os.O_CLOEXEC))
                    except OSError as e:
                        if e.errno not in (errno.EMFILE, errno.ENFILE):
                            raise
    return result


def relock(tree: Path, upper: Path, unlocked: list[tuple[str, int, int]]) -> None:
    """Give the directories ``index`` unlocked their modes back, in the tree and in the
    step's upper directory, unless the step set another mode itself."""
    for rel, mode, given in reversed(unlocked):  # children first
        for where in (os.path.join(tree, rel), os.path.join(upper, rel)):
            try:
                st = os.lstat(where)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == given:
                os.chmod(where, mode)


def _key(st: os.stat_result) -> tuple[int, int, int, int, int, int, int, int]:
    return (st.st_ino, st.st_mode, st.st_ctime_ns, st.st_mtime_ns, st.st_size, st.st_uid,
            st.st_gid, st.st_nlink)


def _raise_fd_limit() -> None:
    """The soft descriptor limit up to the hard one (``index`` holds one per directory);
    sandbox/chroot.py gives a step the limit the process started with."""
    raise_nofile_limit()


def _set_opaque(path: str) -> None:
    """Mark a directory opaque: trusted.overlay.opaque where this process may (root on a host:
    what overlayfs without ``userxattr`` reads), else user.overlay.opaque (layers/diff.py
    reads both; a container without CAP_SYS_ADMIN can write only that one)."""
    try:
        os.setxattr(path, "trusted.overlay.opaque", b"y", follow_symlinks=False)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP):
            raise
        os.setxattr(path, "user.overlay.opaque", b"y", follow_symlinks=False)


def _whiteout(path: str) -> None:
    """overlayfs' deletion marker: a 0/0 character device, or where the file system refuses
    one (a container's overlayfs does, even to root with CAP_MKNOD) the kernel's other form,
    an empty file with ``user.overlay.whiteout`` (layers/diff.py reads both). The directories
    of ``upper`` get their metadata after this (``diff``), so the xattr set on the parent
    here is not undone: an xattr changes no mtime."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        return
    except OSError as e:
        if e.errno != errno.EPERM:
            raise
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.setxattr(fd, "user.overlay.whiteout", b"y")  # first: a user xattr obeys the mode
        os.fchmod(fd, 0)
    finally:
        os.close(fd)
    # and its directory says it holds such whiteouts ("x"), as the kernel (6.7 and later)
    # wants before it reads them, should a later build mount this snapshot as a lower layer
    parent = os.path.dirname(path)
    try:
        os.getxattr(parent, "user.overlay.opaque", follow_symlinks=False)
    except OSError:
        os.setxattr(parent, "user.overlay.opaque", b"x", follow_symlinks=False)


def _moved(old: dict[int, tuple[int, ...]], st: os.stat_result) -> bool:
    """Whether ``st`` is an inode the index had (same inode, type and mtime), under a new
    name: moved or linked, not made by the step."""
    key = old.get(st.st_ino)
    return key is not None and stat.S_IFMT(key[1]) == stat.S_IFMT(st.st_mode) and \
        key[3] == st.st_mtime_ns


def diff(tree: Path, before: Index, upper: Path, *,
         creator: tuple[int, int] | None = None) -> None:
    """Write into the empty ``upper`` what changed in ``tree`` since ``before`` was taken.

    ``creator``: while owners are recorded (cloche.fs.owners: a build that is not root), the
    (uid, gid) of the step's user, which every new entry without a recorded owner gets (on
    disk it is the caller's, read as 0:0). A changed entry keeps its owner, and so does a
    new name of an old file (moved or linked: an inode of the index with the same type and
    mtime)."""
    record = creator if recording() and creator is not None and creator != (0, 0) else None
    old_inodes: dict[int, tuple[int, ...]] = {} if record is None else {
        key[0]: key for key in before.values()}
    made: list[str] = []  # directories made in upper, for their metadata at the end
    made_set: set[str] = set()
    links: dict[tuple[int, int], str] = {}
    opaque: list[str] = []

    def ensure_dir(rel: str) -> None:
        if not rel or rel in made_set:
            return
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p in made_set:
                continue
            os.mkdir(os.path.join(upper, p), 0o700)
            made.append(p)
            made_set.add(p)

    seen: set[str] = set()
    fresh_dirs: set[str] = set()
    pending: list[tuple[str, bool]] = [("", False)]
    while pending:
        rel, fresh = pending.pop()
        with os.scandir(os.path.join(tree, rel)) as it:
            entries = list(it)
        for entry in entries:
            r = os.path.join(rel, entry.name)
            seen.add(r)
            st = entry.stat(follow_symlinks=False)
            old = before.get(r)
            same = old is not None and old[0] == st.st_ino and \
                stat.S_IFMT(old[1]) == stat.S_IFMT(st.st_mode)
            changed = fresh or not same or old != _key(st)
            if record is not None and not same and not _moved(old_inodes, st) \
                    and recorded_owner(entry.path, st) is None:
                set_owner(entry.path, *record)  # in the tree too: later steps read it there
                st = os.lstat(entry.path)
            if stat.S_ISDIR(st.st_mode):
                new_dir = fresh or not same
                if changed:
                    ensure_dir(r)
                    if new_dir and old is not None and not fresh:
                        opaque.append(r)  # it replaced what was there: hide the lowers'
                if new_dir:
                    fresh_dirs.add(r)
                pending.append((r, new_dir))
            elif changed:
                ensure_dir(rel)
                _copy_entry(entry.path, os.path.join(upper, r), st, links)
    for r in sorted(before):  # parents before children: only the top of a deleted tree
        if r in seen:
            continue
        parent = os.path.dirname(r)
        if parent and (parent not in seen or parent in fresh_dirs):
            continue  # the parent went too (its own whiteout), or replaced its contents
        ensure_dir(parent)
        _whiteout(os.path.join(upper, r))
    for p in reversed(made):
        host = os.path.join(tree, p)
        _meta(host, os.path.join(upper, p), os.lstat(host))
    for p in opaque:
        _set_opaque(os.path.join(upper, p))
