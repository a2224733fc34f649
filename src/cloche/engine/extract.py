"""Safe tar extraction, for ADD of a local archive and for a build context sent on stdin.

A tar is input anyone could have made, so every entry is confined to the directory it is
extracted into, as Docker's archive package does inside its chroot: a name that climbs out
with ``..`` is refused with an error naming the entry; parents are resolved with the
extraction directory as ``/`` (a symlink entry pointing to ``/etc`` followed by ``link/x``
writes ``<dest>/etc/x``); a relative symlink whose target climbs out, and a hard link to a
path outside, are refused. Compression is recognised by its magic bytes (gzip, bzip2, xz,
zstd), never by the file name, and everything is streamed.
"""

from __future__ import annotations

import io
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from cloche.engine.fsutil import CopyTargetError, Owner, mkdir_all, set_metadata
from cloche.errors import ClocheError, UnsafePathError
from cloche.layers.compress import Compression, open_decompressed_reader
from cloche.layers.compress import detect_compression as _detect
from cloche.sandbox.paths import resolve_in_root

__all__ = ["ArchiveError", "Prefixed", "ExtractResult", "detect_compression", "extract_tar",
           "is_tar_archive", "open_decompressed"]

_CHUNK = 1 << 20


class ArchiveError(ClocheError, ValueError):
    """A tar or compressed stream that cannot be read."""


@dataclass(frozen=True)
class ExtractResult:
    entries: int
    bytes: int


def detect_compression(head: bytes) -> str | None:
    """The compression named by the first bytes of a stream, or None for plain data."""
    found = _detect(head)
    return None if found is Compression.NONE else found.value


class Prefixed(io.RawIOBase):
    """A stream with some already-read bytes put back in front (stdin cannot seek)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def open_decompressed(raw: BinaryIO) -> BinaryIO:
    """``raw`` decompressed according to its magic bytes (unchanged when not compressed)."""
    return open_decompressed_reader(raw)


def is_tar_archive(path: Path) -> bool:
    """Whether ``path`` holds a (possibly compressed) tar with at least one entry.

    This is BuildKit's test for ADD: decompress, then read one tar header.
    """
    try:
        with open(path, "rb") as raw, open_decompressed(raw) as data:
            with tarfile.open(fileobj=data, mode="r|") as tf:
                return tf.next() is not None
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError, zstandard.ZstdError, ValueError):
        return False


def _entry_rel(name: str, label: str) -> str:
    """The cleaned relative path of a tar entry; refuses one that climbs out."""
    cleaned = posixpath.normpath(name.lstrip("/") or ".")
    if cleaned == ".." or cleaned.startswith("../"):
        raise UnsafePathError(f"{label}: entry {name!r} is outside of the extraction directory")
    return "" if cleaned == "." else cleaned


def _pax_xattrs(member: tarfile.TarInfo) -> Iterator[tuple[str, bytes]]:
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            yield key[len("SCHILY.xattr."):], value.encode("utf-8", "surrogateescape")


def extract_tar(raw: BinaryIO, dest: Path, *, owner: Owner | None = None,
                label: str = "archive", keep_owner: bool = True) -> ExtractResult:
    """Extract a (possibly compressed) tar stream into the existing directory ``dest``.

    Owners come from the tar unless ``owner`` is given (ADD --chown) or ``keep_owner`` is
    False (0:0). Directory times are set last, after their contents are written.
    """
    dest = dest.resolve()
    count = total = 0
    dir_times: list[tuple[str, int]] = []
    try:
        with open_decompressed(raw) as data, tarfile.open(fileobj=data, mode="r|") as tf:
            for member in tf:
                count += 1
                try:
                    total += _extract_one(tf, member, dest, owner, label, keep_owner, dir_times)
                except CopyTargetError as e:
                    raise ArchiveError(f"{label}: cannot extract {member.name!r}: {e.message}") \
                        from e
                except OSError as e:
                    if e.errno is None:
                        raise
                    raise ArchiveError(f"{label}: cannot extract {member.name!r}: "
                                       f"{e.strerror or e}") from e
    except (tarfile.TarError, EOFError, lzma.LZMAError, zstandard.ZstdError, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise
        raise ArchiveError(f"{label}: cannot read the tar: {e}") from e
    for rel, mtime_ns in reversed(dir_times):
        # Re-resolved inside dest: a later entry may have replaced a parent with a link.
        path = resolve_in_root(dest, rel, follow_last=False)
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            pass
    return ExtractResult(count, total)


def _extract_one(tf: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, owner: Owner | None,
                 label: str, keep_owner: bool, dir_times: list[tuple[str, int]]) -> int:
    rel = _entry_rel(member.name, label)
    if not rel:
        return 0  # the root entry ("./") leaves the destination's own metadata alone
    parent_rel, base = posixpath.split(rel)
    parent = resolve_in_root(dest, parent_rel)
    mkdir_all(dest, parent)
    target = parent / base
    display = f"{label}: {member.name}"
    try:
        st = os.lstat(target)
        if not (stat.S_ISDIR(st.st_mode) and member.isdir()):
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(target)
            else:
                os.unlink(target)
    except FileNotFoundError:
        pass
    written = 0
    if member.isdir():
        if not target.is_dir():
            os.mkdir(target, 0o700)
    elif member.isreg():
        src = tf.extractfile(member)
        assert src is not None
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                written += len(chunk)
    elif member.issym():
        if not member.linkname.startswith("/") and posixpath.normpath(
                posixpath.join(parent_rel, member.linkname)).startswith(".."):
            raise UnsafePathError(f"{display}: symlink target {member.linkname!r} "
                                  "is outside of the extraction directory")
        os.symlink(member.linkname, target)
    elif member.islnk():
        link_rel = _entry_rel(member.linkname, label)
        source = resolve_in_root(dest, link_rel, follow_last=False)
        if not os.path.lexists(source):
            raise ArchiveError(f"{display}: hard link to {member.linkname!r}, which is not in the archive")
        os.link(source, target, follow_symlinks=False)
        if os.path.islink(source):
            return 0  # Docker leaves a link to a symlink alone
        # Docker applies the link entry's header (mode, owner, times) to the shared inode
    elif member.ischr() or member.isblk():
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
        os.mknod(target, kind | 0o600, os.makedev(member.devmajor, member.devminor))
    elif member.isfifo():
        os.mkfifo(target, 0o600)
    else:
        return 0  # other types (sparse extensions, GNU volume headers) carry no file
    uid_gid = owner or (Owner(member.uid, member.gid) if keep_owner else Owner(0, 0))
    is_link = member.issym()
    set_metadata(target, mode=None if is_link else member.mode, owner=uid_gid, mtime_ns=None)
    for key, value in _pax_xattrs(member):
        try:
            os.setxattr(target, key, value, follow_symlinks=False)
        except OSError:
            pass
    mtime_ns = int(member.mtime * 1_000_000_000)
    if member.isdir():
        dir_times.append((rel, mtime_ns))
    else:
        os.utime(target, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
    return written
