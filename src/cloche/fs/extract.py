"""The one tar extractor: typed tar entries written into a directory, never escaping it.

Both image layers (``cloche.layers.apply``, with OCI whiteouts) and ADD's archives and build
contexts from stdin (``cloche.engine.extract``) come through here, so both get the same rules.
A tar is input anyone could have made; its names and links are attacker-controlled:

- Entry names were cleaned by the reader (``tarentry.clean_path``: a name that climbs out with
  '..' never gets here). Parents are opened one component at a time from an fd of the
  destination with ``O_NOFOLLOW`` (``paths.open_dir_at``): a symlink met in a parent is
  resolved *inside* the destination, as if it were '/' (what Docker gets from its chroot).
  The last component is never followed: an entry replaces whatever is there, a directory
  merges into a directory.
- A hard link's target is resolved the same way, must already exist and not be a directory;
  the link entry's header then applies to the shared inode (unless it is a symlink), as in
  Docker.
- ``confine_symlinks`` (ADD) refuses a relative symlink whose target climbs out of the
  destination, as Docker's archive package does for ADD.
- Device files need root; without it they are refused (or skipped, on request, and always
  while owners are recorded: ``cloche.fs.owners``).
- Owners and non-``user.`` xattrs are applied with ``same_owner`` (default: when root, or
  while owners are recorded as xattrs, ``cloche.fs.owners``), or replaced by ``owner``;
  modes and mtimes always; a tar's own ``user.cloche.owner`` never. A directory's mode and
  mtime are set after the whole tar, when its children are in (a 0555 directory still gets
  its files, and they do not touch its mtime). overlayfs' private xattrs
  (``trusted.overlay.*``, ``user.overlay.*``) are never applied, as containerd drops them:
  on a directory used as an overlay lower they would make files vanish (an
  ``overlay.whiteout`` in an ``overlay.opaque=x`` directory) or redirect lookups, while the
  same tar flattened elsewhere shows them.
- Files keep their holes: a sparse member's holes are skipped (its data regions written at
  their offsets, the size set with ftruncate), and so is any whole chunk of zeros in a plain
  file. A 99-byte layer holding a 2 GiB sparse file used to become 2 GiB of disk.

Whiteouts follow the OCI spec when ``whiteouts`` is on: ``.wh.NAME`` removes NAME from the
lower layers, ``.wh..wh..opq`` empties its directory of lower contents; neither touches what
the same tar added, whatever the order of entries. With it off (ADD), they are plain files.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from cloche.errors import ClocheError, UnsafePathError
from cloche.fs.dircache import DirCache
from cloche.fs.owners import OWNER_XATTR, recording, set_owner
from cloche.fs.paths import NotInRootError, open_dir_at
from cloche.fs.rmtree import rmtree
from cloche.fs.tarentry import OPAQUE_MARKER, WHITEOUT_PREFIX, EntryType, TarEntry

__all__ = ["ExtractError", "Extractor"]

_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)
# overlayfs' own metadata: whiteouts, opaque directories, redirects (see the docstring)
OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")


class ExtractError(ClocheError, ValueError):
    """A tar entry that cannot be written (missing link target, device without root, short
    content, an I/O error); the message names the entry. Callers re-raise it as their own
    error type (LayerError, ArchiveError)."""


def _proc(fd: int, name: str = "") -> str:
    """A path that reaches the object an fd holds (O_PATH fds included), without following."""
    return f"/proc/self/fd/{fd}" + (f"/{name}" if name else "")


class Extractor:
    """Writes tar entries into the directory ``dest`` (created when missing).

    ``devices``: "error" (default) refuses device entries when not root, "skip" drops them.
    ``same_owner`` (default: running as root) applies the tar's uid/gid and all xattrs;
    ``owner`` (uid, gid) replaces every entry's owner instead. ``root_metadata``: whether an
    entry for the root directory itself changes ``dest``'s mode and times.
    """

    def __init__(self, dest: str | Path, *, same_owner: bool | None = None,
                 owner: tuple[int, int] | None = None, devices: str = "error",
                 whiteouts: bool = True, confine_symlinks: bool = False,
                 root_metadata: bool = True) -> None:
        os.makedirs(dest, exist_ok=True)
        self.dest = os.fspath(dest)
        self.is_root = os.geteuid() == 0
        self.same_owner = (self.is_root or recording()) if same_owner is None else same_owner
        if devices not in ("error", "skip"):
            raise ValueError(f"devices must be 'error' or 'skip', not {devices!r}")
        self.devices = devices
        self.owner = owner
        self.whiteouts = whiteouts
        self.confine_symlinks = confine_symlinks
        self.root_metadata = root_metadata
        self.bytes = 0  # file content written so far, over every extract() call

    def extract(self, entries: Iterable[tuple[TarEntry, BinaryIO | None]]) -> int:
        """Write ``entries`` (a reader's (entry, content) pairs, in tar order); returns how
        many were seen. Directory metadata is applied at the end."""
        root_fd = os.open(self.dest, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self._dirs = DirCache(root_fd)
        added: set[str] = set()
        dir_meta: list[tuple[str, int, int]] = []  # (path, mode, mtime), applied last
        self._unlocked: dict[str, int] = {}  # directories given u+rwx (_may_write), their modes
        count = 0
        try:
            for entry, content in entries:
                count += 1
                try:
                    self._entry(root_fd, entry, content, added, dir_meta)
                except (ExtractError, UnsafePathError):
                    raise
                except NotInRootError as e:
                    raise ExtractError(str(e)) from e
                except OSError as e:
                    raise ExtractError(f"tar entry {entry.path!r}: {e.strerror or e}") from e
            for path, mode in self._unlocked.items():
                self._set_dir_meta(root_fd, path, mode, None)
            for path, mode, mtime in reversed(dir_meta):
                self._set_dir_meta(root_fd, path, mode, mtime)
        finally:
            self._dirs.close()
            os.close(root_fd)
        return count

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _remove(self, dir_fd: int, name: str, st: os.stat_result | None = None) -> None:
        st = st or Extractor._lstat(dir_fd, name)
        if st is None:
            return
        self._dirs.forget()  # the cached directory may be in what goes
        if stat.S_ISDIR(st.st_mode):
            rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)

    def _ids(self, entry: TarEntry) -> tuple[int, int] | None:
        if self.owner is not None:
            return self.owner
        return (entry.uid, entry.gid) if self.same_owner else None

    # -- entries ------------------------------------------------------------------------------

    def _set_dir_meta(self, root_fd: int, path: str, mode: int, mtime: int | None) -> None:
        """A directory's mode and mtime (None: its own), set once its children are in."""
        if not path:
            fd = os.dup(root_fd)
        else:
            parent, _, name = path.rpartition("/")
            try:
                pfd = self._dirs.open(parent, create=False, what=path)
            except NotInRootError:
                return  # removed by a later entry of the same tar
            try:
                fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            except FileNotFoundError:
                return
            finally:
                os.close(pfd)
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):  # not replaced by a later entry
                os.chmod(_proc(fd), mode)
                if mtime is not None:
                    os.utime(_proc(fd), ns=(mtime * 1_000_000_000,) * 2)
        finally:
            os.close(fd)

    def _entry(self, root_fd: int, entry: TarEntry, content: BinaryIO | None,
               added: set[str], dir_meta: list[tuple[str, int, int]]) -> None:
        if not entry.path:  # the root directory itself: metadata only
            if entry.type is EntryType.DIR and self.root_metadata:
                self._metadata_path(root_fd, entry)
                dir_meta.append(("", entry.mode, entry.mtime))
            return
        name = entry.name
        whiteout = self.whiteouts and entry.is_whiteout
        if self.whiteouts and name.startswith(WHITEOUT_PREFIX * 2) and name != OPAQUE_MARKER:
            return  # aufs bookkeeping (.wh..wh.plnk...), never content
        what = f"tar entry {entry.path!r}"
        if whiteout:
            try:  # nothing below to delete when the directory does not exist
                pfd = self._dirs.open(entry.parent, create=False, what=what)
            except NotInRootError:  # missing, or not a directory: nothing there to delete
                return
        else:
            pfd = self._dirs.open(entry.parent, create=True, what=what)
        try:
            if whiteout and entry.is_opaque:
                self._clear_lower(pfd, entry.parent, added)
            elif whiteout:
                target = name[len(WHITEOUT_PREFIX):]
                if target in ("", ".", "..") or "/" in target:
                    raise UnsafePathError(f"whiteout {entry.path!r} names no sibling")
                if entry.whiteout_target not in added:
                    self._remove(pfd, target)
            else:
                try:
                    self._create(root_fd, pfd, entry, content, dir_meta)
                except PermissionError:
                    if not self._may_write(pfd, entry.parent):
                        raise
                    self._create(root_fd, pfd, entry, content, dir_meta)
                added.add(entry.path)
        finally:
            os.close(pfd)

    def _may_write(self, pfd: int, parent: str) -> bool:
        """A user who records owners (not root) met a directory of an earlier layer whose
        mode denies it writing (0555): give it u+rwx until the end of this tar, then its mode
        back (root writes there regardless). False when that cannot help."""
        if self.is_root or not recording() or parent in self._unlocked:
            return False
        st = os.stat(_proc(pfd))
        if st.st_mode & 0o700 == 0o700 or st.st_uid != os.geteuid():
            return False
        self._unlocked[parent] = stat.S_IMODE(st.st_mode)
        os.chmod(_proc(pfd), stat.S_IMODE(st.st_mode) | 0o700)
        return True

    def _clear_lower(self, pfd: int, parent: str, added: set[str]) -> None:
        listing = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=pfd)
        try:
            names = os.listdir(listing)
        finally:
            os.close(listing)
        for child in names:
            if (f"{parent}/{child}" if parent else child) not in added:
                self._remove(pfd, child)

    def _create(self, root_fd: int, pfd: int, entry: TarEntry, content: BinaryIO | None,
                dir_meta: list[tuple[str, int, int]]) -> None:
        name = entry.name
        kind = entry.type
        if kind is EntryType.SYMLINK and self.confine_symlinks and not entry.linkname.startswith(
                "/") and posixpath.normpath(posixpath.join(entry.parent, entry.linkname)
                                            ).startswith(".."):
            raise UnsafePathError(f"tar entry {entry.path!r}: symlink target "
                                  f"{entry.linkname!r} is outside of the extraction directory")
        if kind in (EntryType.CHAR, EntryType.BLOCK) and not self.is_root:
            if self.devices == "skip" or recording():
                return
            raise ExtractError(f"tar entry {entry.path!r}: device files need root "
                               "(apply with devices='skip' to drop them)")
        existing = self._lstat(pfd, name)
        if existing is not None:
            if kind is EntryType.DIR and stat.S_ISDIR(existing.st_mode):
                self._metadata(pfd, entry)
                dir_meta.append((entry.path, entry.mode, entry.mtime))
                return
            self._remove(pfd, name, existing)
        if kind is EntryType.FILE:
            self._write_file(pfd, entry, content)
        elif kind is EntryType.DIR:
            os.mkdir(name, 0o700, dir_fd=pfd)
            self._metadata(pfd, entry)
            dir_meta.append((entry.path, entry.mode, entry.mtime))
        elif kind is EntryType.SYMLINK:
            os.symlink(entry.linkname, name, dir_fd=pfd)
            self._metadata(pfd, entry)
        elif kind is EntryType.HARDLINK:
            self._link(root_fd, pfd, entry)
        elif kind is EntryType.FIFO:
            os.mknod(name, 0o600 | stat.S_IFIFO, dir_fd=pfd)
            self._metadata(pfd, entry)
        else:  # CHAR, BLOCK (as root)
            try:
                os.mknod(name, 0o600 | kind.mode_bits,
                         os.makedev(entry.devmajor, entry.devminor), dir_fd=pfd)
            except PermissionError:
                # a user namespace (rootless) or a container without CAP_MKNOD: the kernel
                # makes no device there; the node is left out of the tree, as moby and
                # containerd do in a user namespace (the layer itself keeps it)
                return
            self._metadata(pfd, entry)

    def _write_file(self, pfd: int, entry: TarEntry, content: BinaryIO | None) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(entry.name, flags, 0o600, dir_fd=pfd)
        try:
            if content is not None and entry.size:
                regions = entry.sparse if entry.sparse is not None else ((0, entry.size),)
                end = 0
                for offset, length in regions:
                    if offset < end or length < 0 or offset + length > entry.size:
                        raise ExtractError(f"tar entry {entry.path!r}: bad sparse map "
                                           f"(region {offset}+{length} of {entry.size} bytes)")
                    if length:
                        if offset != end or entry.sparse is not None:
                            content.seek(offset)
                        self._write_region(fd, entry, content, offset, length)
                    end = offset + length
                os.ftruncate(fd, entry.size)  # the holes at the end, if any
            ids = self._ids(entry)
            if ids is not None:
                set_owner(fd, *ids)
            os.fchmod(fd, entry.mode)
            self._xattrs(_proc(fd), entry)
            os.utime(fd, ns=(entry.mtime * 1_000_000_000,) * 2)
        finally:
            os.close(fd)

    def _write_region(self, fd: int, entry: TarEntry, content: BinaryIO, offset: int,
                      length: int) -> None:
        """``length`` bytes of content at ``offset``; whole chunks of zeros become holes."""
        left = length
        while left:
            chunk = content.read(min(_CHUNK, left))
            if not chunk:
                raise ExtractError(f"tar entry {entry.path!r}: content ends early")
            if chunk != _ZEROS:
                _pwrite_all(fd, chunk, offset)
            offset += len(chunk)
            left -= len(chunk)
            self.bytes += len(chunk)

    def _link(self, root_fd: int, pfd: int, entry: TarEntry) -> None:
        what = f"hard link {entry.path!r} -> {entry.linkname!r}"
        tparent, _, tname = entry.linkname.rpartition("/")
        try:
            tfd = open_dir_at(root_fd, tparent, create=False, what=what)
        except NotInRootError:
            raise ExtractError(f"{what}: target not found in the root") from None
        try:
            st = self._lstat(tfd, tname)
            if st is None:
                raise ExtractError(f"{what}: target not found in the root")
            if stat.S_ISDIR(st.st_mode):
                raise ExtractError(f"{what}: target is a directory")
            os.link(tname, entry.name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)
        if not stat.S_ISLNK(st.st_mode):  # as Docker: a link to a symlink is left alone
            # the link entry's header (owner, mode, xattrs, times) goes to the shared inode
            self._metadata(pfd, entry)

    def _metadata(self, pfd: int, entry: TarEntry) -> None:
        """Owner, mode, xattrs and mtime of a just-created non-regular entry (never followed)."""
        name = entry.name
        if entry.type is EntryType.SYMLINK:
            ids = self._ids(entry)
            if ids is not None:
                set_owner(_proc(pfd, name), *ids)
            self._xattrs(_proc(pfd, name), entry, follow=False)
            os.utime(name, ns=(entry.mtime * 1_000_000_000,) * 2, dir_fd=pfd,
                     follow_symlinks=False)
            return
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            self._metadata_path(fd, entry)
        finally:
            os.close(fd)

    def _metadata_path(self, fd: int, entry: TarEntry) -> None:
        path = _proc(fd)
        ids = self._ids(entry)
        if ids is not None:
            set_owner(path, *ids, follow_symlinks=True)
        self._xattrs(path, entry)
        if entry.type is not EntryType.DIR:  # directories: see _set_dir_meta
            os.chmod(path, entry.mode)
            os.utime(path, ns=(entry.mtime * 1_000_000_000,) * 2)

    def _xattrs(self, path: str, entry: TarEntry, *, follow: bool = True) -> None:
        for key, value in entry.xattrs:
            if not self.same_owner and not key.startswith("user."):
                continue
            if key.startswith(OVERLAY_XATTR_PREFIXES) or key == OWNER_XATTR:
                continue
            try:
                os.setxattr(path, key, value, follow_symlinks=follow)
            except OSError as e:  # as Docker: a file system without xattrs is not an error
                if e.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise ExtractError(f"tar entry {entry.path!r}: xattr {key}: "
                                       f"{e.strerror}") from e


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
