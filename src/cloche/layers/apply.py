"""Apply layer tars to a directory (flattening a rootfs), honouring whiteouts, never escaping.

A layer comes from the network; its names and links are attacker-controlled. The rules:

- Every path is resolved one component at a time from an fd of the destination, with
  ``O_NOFOLLOW``. A symlink met in a parent component is resolved *inside* the root, as if the
  root were '/' (what ``docker`` gets from its chroot): ``lib -> /usr/lib`` leads to
  ``DEST/usr/lib``, ``x -> ../../..`` stops at ``DEST``. The last component is never followed:
  an entry replaces whatever is there.
- Names with '..' that climb out are refused (``clean_path``); absolute names are confined.
- A hard link's target is resolved the same way, so it can only name a file inside the root,
  and must already exist there.
- Device files need root; without it they are refused (or skipped, on request).
- Ownership, xattrs (``security.capability`` included) are applied when running as root;
  modes and mtimes always. A directory's mode and mtime are set after the layer, when its
  children are in (so a 0555 directory still gets its files, and they do not touch its mtime).

Whiteouts follow the OCI spec: ``.wh.NAME`` removes NAME from the lower layers,
``.wh..wh..opq`` empties its directory of lower contents; neither touches what the same layer
added, whatever the order of entries.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cloche.errors import LayerError, UnsafePathError
from cloche.layers.entry import OPAQUE_MARKER, WHITEOUT_PREFIX, EntryType, TarEntry
from cloche.layers.reader import LayerReader
from cloche.oci.digest import Digest, verify

__all__ = ["ApplyResult", "LayerApplier", "apply_layer", "flatten"]

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ApplyResult:
    """What applying one layer did: entries seen, and the diff_id of its tar."""

    entries: int
    diff_id: Digest


class _MissingDirError(LayerError):
    """A directory that a whiteout or a hard link needs is not there."""


def _proc(fd: int, name: str = "") -> str:
    """A path that reaches the object an fd holds (O_PATH fds included), without following."""
    return f"/proc/self/fd/{fd}" + (f"/{name}" if name else "")


class LayerApplier:
    """Applies layers, in order, to one destination directory.

    ``devices``: "error" (default) refuses device entries when not root, "skip" drops them.
    ``same_owner`` (default: running as root) applies the tar's uid/gid and xattrs.
    """

    def __init__(self, dest: str | Path, *, same_owner: bool | None = None,
                 devices: str = "error") -> None:
        os.makedirs(dest, exist_ok=True)
        self.dest = os.fspath(dest)
        self.is_root = os.geteuid() == 0
        self.same_owner = self.is_root if same_owner is None else same_owner
        if devices not in ("error", "skip"):
            raise ValueError(f"devices must be 'error' or 'skip', not {devices!r}")
        self.devices = devices

    # -- path resolution inside the root ------------------------------------------------------

    def _open_dir(self, root_fd: int, rel: str, *, create: bool, what: str) -> int:
        """An O_PATH fd of directory ``rel``, symlinks resolved inside the root."""
        fds = [os.dup(root_fd)]
        todo = [p for p in reversed(rel.split("/"))]
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
                        raise _MissingDirError(f"{what}: {rel!r} does not exist inside the root") \
                            from None
                    os.mkdir(name, 0o755, dir_fd=cur)
                    os.chmod(name, 0o755, dir_fd=cur, follow_symlinks=True)  # whatever the umask
                    fds.append(os.open(name, _DIR_FLAGS, dir_fd=cur))
                    continue
                except OSError as e:
                    if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                st = os.stat(name, dir_fd=cur, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise LayerError(f"{what}: {name!r} in {rel!r} is not a directory")
                links += 1
                if links > _MAX_LINKS:
                    raise UnsafePathError(f"{what}: too many symlinks resolving {rel!r}")
                target = os.readlink(name, dir_fd=cur)
                if target.startswith("/"):
                    while len(fds) > 1:
                        os.close(fds.pop())
                todo.extend(reversed(target.split("/")))
            result = fds.pop()
            return result
        finally:
            for fd in fds:
                os.close(fd)

    @staticmethod
    def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    @staticmethod
    def _remove(dir_fd: int, name: str, st: os.stat_result | None = None) -> None:
        st = st or LayerApplier._lstat(dir_fd, name)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)

    # -- one layer ------------------------------------------------------------------------------

    def apply(self, stream: BinaryIO, *, diff_id: Digest | None = None,
              decompress: bool = True) -> ApplyResult:
        """Apply one layer blob (compression sniffed); verify its diff_id when given."""
        reader = LayerReader(stream, decompress=decompress)
        root_fd = os.open(self.dest, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        added: set[str] = set()
        dir_meta: list[tuple[str, int, int]] = []  # (path, mode, mtime), applied last
        count = 0
        try:
            for entry, content in reader:
                count += 1
                try:
                    self._apply_entry(root_fd, entry, content, added, dir_meta)
                except (LayerError, UnsafePathError):
                    raise
                except OSError as e:
                    raise LayerError(f"tar entry {entry.path!r}: {e.strerror or e}") from e
            for path, mode, mtime in reversed(dir_meta):
                self._set_dir_meta(root_fd, path, mode, mtime)
        finally:
            os.close(root_fd)
        assert reader.diff_id is not None
        if diff_id is not None:
            verify(diff_id, reader.diff_id, "layer diff_id")
        return ApplyResult(entries=count, diff_id=reader.diff_id)

    def _set_dir_meta(self, root_fd: int, path: str, mode: int, mtime: int) -> None:
        """A directory's mode and mtime, set once its children are in (a 0555 directory
        still receives them when not root; adding children would change the mtime)."""
        if not path:
            fd = os.dup(root_fd)
        else:
            parent, _, name = path.rpartition("/")
            try:
                pfd = self._open_dir(root_fd, parent, create=False, what=path)
            except LayerError:
                return  # removed by a later entry of the same layer
            try:
                fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            except FileNotFoundError:
                return
            finally:
                os.close(pfd)
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):  # not replaced by a later entry
                os.chmod(_proc(fd), mode)
                os.utime(_proc(fd), ns=(mtime * 1_000_000_000,) * 2)
        finally:
            os.close(fd)

    def _apply_entry(self, root_fd: int, entry: TarEntry, content: BinaryIO | None,
                     added: set[str], dir_meta: list[tuple[str, int, int]]) -> None:
        if not entry.path:  # the root directory itself: metadata only
            if entry.type is EntryType.DIR:
                self._metadata_path(root_fd, entry)
                dir_meta.append(("", entry.mode, entry.mtime))
            return
        name = entry.name
        if name.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX) and name != OPAQUE_MARKER:
            return  # aufs bookkeeping (.wh..wh.plnk...), never content
        what = f"tar entry {entry.path!r}"
        if entry.is_whiteout:
            try:  # nothing below to delete when the directory does not exist
                pfd = self._open_dir(root_fd, entry.parent, create=False, what=what)
            except LayerError:  # missing, or not a directory: nothing there to delete
                return
        else:
            pfd = self._open_dir(root_fd, entry.parent, create=True, what=what)
        try:
            if entry.is_opaque:
                self._clear_lower(pfd, entry.parent, added)
            elif entry.is_whiteout:
                target = name[len(WHITEOUT_PREFIX):]
                if target in ("", ".", "..") or "/" in target:
                    raise UnsafePathError(f"whiteout {entry.path!r} names no sibling")
                if entry.whiteout_target not in added:
                    self._remove(pfd, target)
            else:
                self._create(root_fd, pfd, entry, content, dir_meta)
                added.add(entry.path)
        finally:
            os.close(pfd)

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
        existing = self._lstat(pfd, name)
        if existing is not None:
            if entry.type is EntryType.DIR and stat.S_ISDIR(existing.st_mode):
                self._metadata(pfd, entry)
                dir_meta.append((entry.path, entry.mode, entry.mtime))
                return
            self._remove(pfd, name, existing)
        kind = entry.type
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
        else:  # CHAR, BLOCK
            if not self.is_root:
                if self.devices == "skip":
                    return
                raise LayerError(f"tar entry {entry.path!r}: device files need root "
                                 "(apply with devices='skip' to drop them)")
            os.mknod(name, 0o600 | kind.mode_bits,
                     os.makedev(entry.devmajor, entry.devminor), dir_fd=pfd)
            self._metadata(pfd, entry)

    def _write_file(self, pfd: int, entry: TarEntry, content: BinaryIO | None) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(entry.name, flags, 0o600, dir_fd=pfd)
        try:
            left = entry.size
            while left and content is not None:
                chunk = content.read(min(_CHUNK, left))
                if not chunk:
                    raise LayerError(f"tar entry {entry.path!r}: content ends early")
                _write_all(fd, chunk)
                left -= len(chunk)
            if self.same_owner:
                os.fchown(fd, entry.uid, entry.gid)
            os.fchmod(fd, entry.mode)
            self._xattrs(_proc(fd), entry)
            os.utime(fd, ns=(entry.mtime * 1_000_000_000,) * 2)
        finally:
            os.close(fd)

    def _link(self, root_fd: int, pfd: int, entry: TarEntry) -> None:
        what = f"hard link {entry.path!r} -> {entry.linkname!r}"
        tparent, _, tname = entry.linkname.rpartition("/")
        try:
            tfd = self._open_dir(root_fd, tparent, create=False, what=what)
        except _MissingDirError:
            raise LayerError(f"{what}: target not found in the root") from None
        try:
            st = self._lstat(tfd, tname)
            if st is None:
                raise LayerError(f"{what}: target not found in the root")
            if stat.S_ISDIR(st.st_mode):
                raise LayerError(f"{what}: target is a directory")
            os.link(tname, entry.name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def _metadata(self, pfd: int, entry: TarEntry) -> None:
        """Owner, mode, xattrs and mtime of a just-created non-regular entry (never followed)."""
        name = entry.name
        if entry.type is EntryType.SYMLINK:
            if self.same_owner:
                os.chown(name, entry.uid, entry.gid, dir_fd=pfd, follow_symlinks=False)
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
        if self.same_owner:
            os.chown(path, entry.uid, entry.gid)
        self._xattrs(path, entry)
        if entry.type is not EntryType.DIR:  # directories: see _set_dir_meta
            os.chmod(path, entry.mode)
            os.utime(path, ns=(entry.mtime * 1_000_000_000,) * 2)

    def _xattrs(self, path: str, entry: TarEntry, *, follow: bool = True) -> None:
        for key, value in entry.xattrs:
            if not self.same_owner and not key.startswith("user."):
                continue
            try:
                os.setxattr(path, key, value, follow_symlinks=follow)
            except OSError as e:  # as Docker: a file system without xattrs is not an error
                if e.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise LayerError(f"tar entry {entry.path!r}: xattr {key}: {e.strerror}") from e


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def apply_layer(stream: BinaryIO, dest: str | Path, *, diff_id: Digest | None = None,
                devices: str = "error") -> ApplyResult:
    """Apply one layer blob to ``dest`` (see LayerApplier)."""
    return LayerApplier(dest, devices=devices).apply(stream, diff_id=diff_id)


def flatten(layer_streams: Iterable[BinaryIO], dest: str | Path, *,
            diff_ids: Sequence[Digest] | None = None, devices: str = "error"
            ) -> list[ApplyResult]:
    """Apply layers bottom-up to ``dest``, giving the image's root filesystem.

    Each stream is closed once applied (so a generator of ``layer.open()`` leaks nothing).
    With ``diff_ids`` (the config's rootfs.diff_ids) each layer's tar is verified against its
    diff_id; a mismatch raises DigestMismatchError after that layer, and ``dest`` should then
    be thrown away.
    """
    applier = LayerApplier(dest, devices=devices)
    results = []
    expected = list(diff_ids) if diff_ids is not None else None
    for i, stream in enumerate(layer_streams):
        if expected is not None and i >= len(expected):
            raise LayerError(f"more layers than diff_ids ({len(expected)})")
        try:
            results.append(applier.apply(
                stream, diff_id=expected[i] if expected is not None else None))
        finally:
            stream.close()
    if expected is not None and len(results) != len(expected):
        raise LayerError(f"{len(results)} layers for {len(expected)} diff_ids")
    return results
