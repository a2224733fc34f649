"""Layer tar -> typed entries, streamed, with the diff_id computed on the way.

``tarfile`` parses the headers (ustar, GNU long names, PAX, base-256 numbers, sparse files), in
stream mode so nothing is seeked or held: each entry's content is readable only until the next
entry is asked for. Names are decoded as UTF-8 with surrogate escapes, so any byte string
survives the trip; xattr values (``SCHILY.xattr.*``, and libarchive's base64
``LIBARCHIVE.xattr.*``) come back as the exact bytes. Every name and hard link target goes
through ``clean_path``: an entry that climbs out with '..' is refused here, before any caller
can act on it.

A sparse member (GNU or PAX sparse) comes with its map of data regions (``TarEntry.sparse``),
so the extractor writes holes as holes. The layer's expanded size, the bytes of its
uncompressed tar plus the holes of its sparse files, is bounded (``cloche.fs.limits``): a
small blob cannot ask for terabytes of disk, or of hashing.
"""

from __future__ import annotations

import base64
import tarfile
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import BinaryIO, cast

from cloche.compression import Compression, open_decompressed
from cloche.errors import LayerError, UnsafePathError
from cloche.fs.limits import max_layer_size, too_large
from cloche.fs.tarentry import EntryType, TarEntry, clean_path
from cloche.oci.digest import Digest, Digester

__all__ = ["LayerReader", "iter_layer"]

_TYPES = {
    tarfile.REGTYPE: EntryType.FILE, tarfile.AREGTYPE: EntryType.FILE,
    tarfile.CONTTYPE: EntryType.FILE, tarfile.GNUTYPE_SPARSE: EntryType.FILE,
    tarfile.LNKTYPE: EntryType.HARDLINK, tarfile.SYMTYPE: EntryType.SYMLINK,
    tarfile.CHRTYPE: EntryType.CHAR, tarfile.BLKTYPE: EntryType.BLOCK,
    tarfile.DIRTYPE: EntryType.DIR, tarfile.FIFOTYPE: EntryType.FIFO,
}


class _HashingReader:
    """Hashes everything read through it: the tar's bytes, for the diff_id; and keeps the
    layer's expanded size (those bytes, plus ``holes``) under ``limit``."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self._stream = stream
        self.digester = Digester("sha256")
        self.limit = limit
        self.holes = 0

    def grow(self, holes: int = 0) -> None:
        self.holes += holes
        if self.digester.size + self.holes > self.limit:
            raise too_large(self.limit)

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._stream.read(size)
        except LayerError:
            raise
        except Exception as e:  # any decompressor's complaint means corrupt or cut bytes
            raise LayerError(f"corrupt or truncated stream: {type(e).__name__}: {e}") from e
        self.digester.update(data)
        if data:
            self.grow()
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _xattrs(pax: Mapping[str, str]) -> tuple[tuple[str, bytes], ...]:
    found: dict[str, bytes] = {}
    for key, value in pax.items():
        if key.startswith("SCHILY.xattr."):
            found[key[len("SCHILY.xattr."):]] = value.encode("utf-8", "surrogateescape")
        elif key.startswith("LIBARCHIVE.xattr."):
            name = urllib.parse.unquote(key[len("LIBARCHIVE.xattr."):])
            found.setdefault(name, base64.b64decode(value + "=" * (-len(value) % 4)))
    return tuple(sorted(found.items()))


def _entry(info: tarfile.TarInfo) -> TarEntry:
    kind = _TYPES.get(info.type)
    if kind is None:
        raise LayerError(f"tar entry {info.name!r}: unsupported type {info.type!r}")
    path = clean_path(info.name)
    linkname = info.linkname
    if kind is EntryType.HARDLINK:
        linkname = clean_path(linkname, what=f"hard link {info.name!r} -> target")
        if not linkname:
            raise UnsafePathError(f"hard link {info.name!r} points at the root directory")
    sparse = None
    if kind is EntryType.FILE and info.sparse is not None:
        # GNU headers pad the map with (0, 0) slots; a region of no bytes says nothing
        regions = cast("list[tuple[int, int]]", info.sparse)  # typeshed: list[int]
        sparse = tuple((int(offset), int(length)) for offset, length in regions if length)
    return TarEntry(path=path, type=kind, mode=info.mode & 0o7777, uid=info.uid, gid=info.gid,
                    size=info.size if kind is EntryType.FILE else 0, mtime=int(info.mtime),
                    linkname=linkname, devmajor=info.devmajor, devminor=info.devminor,
                    xattrs=_xattrs(info.pax_headers), sparse=sparse)


class LayerReader:
    """Iterates over a layer's entries as (entry, content) pairs; content is None but for files.

    ``stream`` is the blob as stored (compressed or not; sniffed by magic) unless
    ``decompress`` is False. After a complete iteration ``diff_id`` holds the digest of the
    uncompressed tar, trailing padding included. ``limit`` bounds the expanded size
    (default: ``CLOCHE_MAX_LAYER_SIZE``); past it, LayerTooLargeError.
    """

    def __init__(self, stream: BinaryIO, *, decompress: bool = True,
                 expect: Compression | None = None, limit: int | None = None) -> None:
        raw = open_decompressed(stream, expect=expect) if decompress else stream
        self._owned = raw if raw is not stream else None  # the caller closes its own stream
        self._hashing = _HashingReader(raw, max_layer_size() if limit is None else limit)
        self.diff_id: Digest | None = None

    def __iter__(self) -> Iterator[tuple[TarEntry, BinaryIO | None]]:
        try:
            yield from self._entries()
        finally:
            if self._owned is not None:
                self._owned.close()

    def _entries(self) -> Iterator[tuple[TarEntry, BinaryIO | None]]:
        try:
            archive = tarfile.open(fileobj=self._hashing, mode="r|",  # type: ignore[call-overload]
                                   encoding="utf-8", errors="surrogateescape")
        except tarfile.TarError as e:
            raise LayerError(f"not a tar archive: {e}") from e
        with archive:
            while True:
                try:
                    info = archive.next()
                except tarfile.TarError as e:
                    raise LayerError(f"corrupt tar: {e}") from e
                except EOFError as e:
                    raise LayerError(f"truncated tar: {e}") from e
                if info is None:
                    break
                archive.members.clear()  # stream mode: keep memory bounded
                entry = _entry(info)
                if entry.sparse is not None:
                    stored = sum(length for _, length in entry.sparse)
                    self._hashing.grow(max(0, entry.size - stored))
                content = archive.extractfile(info) if entry.type is EntryType.FILE else None
                yield entry, cast(BinaryIO, _Checked(content, entry)) if content is not None else None
        try:
            self._hashing.drain()
        except (OSError, EOFError) as e:
            raise LayerError(f"corrupt stream: {e}") from e
        self.diff_id = self._hashing.digester.digest()


class _Checked:
    """A file's content that turns tarfile's errors into LayerErrors naming the entry.

    It reads tarfile's raw member reader (under its buffer), whose ``seek`` only moves its
    position: skipping a sparse file's hole reads nothing, where the buffered object refuses
    to seek a stream at all."""

    def __init__(self, inner: BinaryIO, entry: TarEntry) -> None:
        self._inner = cast(BinaryIO, getattr(inner, "raw", inner))
        self._entry = entry

    def read(self, size: int = -1) -> bytes:
        try:  # the raw reader reads everything for None, nothing for -1
            return self._inner.read(size if size >= 0 else None)  # type: ignore[arg-type]
        except (tarfile.TarError, EOFError, OSError) as e:
            raise LayerError(f"tar entry {self._entry.path!r}: truncated content ({e})") from e

    def seek(self, offset: int, whence: int = 0) -> int:
        """Forward only (the tar is a stream): the extractor skips a sparse file's holes."""
        try:
            return self._inner.seek(offset, whence)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise LayerError(f"tar entry {self._entry.path!r}: bad sparse map ({e})") from e


def iter_layer(stream: BinaryIO, *, decompress: bool = True
               ) -> Iterator[tuple[TarEntry, BinaryIO | None]]:
    """The entries of a layer blob, streamed (see LayerReader)."""
    return iter(LayerReader(stream, decompress=decompress))
