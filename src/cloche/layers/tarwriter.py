"""A deterministic, streaming layer tar writer that hashes as it writes.

The headers are encoded here rather than by ``tarfile`` because a layer's digest must not
depend on the host: user and group names are left empty (ids are kept), atime/ctime are never
written, PAX records appear only when ustar cannot hold a value (long or non-ASCII names, big
sizes or ids) and for xattrs (``SCHILY.xattr.NAME``, binary values such as
``security.capability`` included, which ``tarfile`` cannot encode). One pass over the bytes
computes the diff_id (sha256 of the tar) and the blob's digest and size (after compression).
"""

from __future__ import annotations

import posixpath
import queue
import threading
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from cloche.compression import Compression
from cloche.errors import LayerError
from cloche.fs.tarentry import EntryType, TarEntry
from cloche.layers.compress import open_compressed_writer
from cloche.oci.digest import Digest, Digester

__all__ = ["ByteSink", "LayerBlob", "TarWriter", "encode_header"]

BLOCK = 512
CHUNK = 1 << 20
_MAX_OCTAL_8 = 0o7777777          # fits an 8-byte field
_MAX_OCTAL_12 = 0o77777777777     # fits a 12-byte field


class ByteSink(Protocol):
    """Where a layer's bytes go: a file, a store's blob writer, or nowhere (hashing only)."""

    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True)
class LayerBlob:
    """What writing a layer produced: the blob's digest and size, and the tar's diff_id."""

    digest: Digest
    diff_id: Digest
    size: int
    compression: Compression
    entries: int = 0

    @property
    def media_type(self) -> str:
        return self.compression.media_type


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\x00" % (width - 1, value)


def _pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode("utf-8") + b"=" + value + b"\n"
    n = len(body)
    length = len(str(n)) + n
    if len(str(length)) + n != length:  # the length's own digits tipped it over
        length += 1
    return str(length).encode() + body


def _ustar(name: bytes, entry: TarEntry, typeflag: bytes, size: int, linkname: bytes) -> bytes:
    header = bytearray(BLOCK)
    header[0:len(name)] = name
    header[100:108] = _octal(entry.mode & 0o7777, 8)
    header[108:116] = _octal(min(entry.uid, _MAX_OCTAL_8), 8)
    header[116:124] = _octal(min(entry.gid, _MAX_OCTAL_8), 8)
    header[124:136] = _octal(min(size, _MAX_OCTAL_12), 12)
    header[136:148] = _octal(min(max(entry.mtime, 0), _MAX_OCTAL_12), 12)
    header[148:156] = b" " * 8
    header[156:157] = typeflag
    header[157:157 + len(linkname)] = linkname
    header[257:265] = b"ustar\x0000"
    if entry.type in (EntryType.CHAR, EntryType.BLOCK):
        header[329:337] = _octal(entry.devmajor, 8)
        header[337:345] = _octal(entry.devminor, 8)
    checksum = sum(header)
    header[148:156] = b"%06o\x00 " % checksum
    return bytes(header)


def _fits(text: bytes, limit: int) -> bool:
    return len(text) <= limit and text.isascii()


def encode_header(entry: TarEntry) -> bytes:
    """The header block(s) for ``entry``: a PAX extended header when needed, then ustar."""
    name = entry.path + ("/" if entry.type is EntryType.DIR and entry.path else "")
    raw_name = name.encode("utf-8", "surrogateescape")
    raw_link = entry.linkname.encode("utf-8", "surrogateescape")
    size = entry.size if entry.type is EntryType.FILE else 0
    pax: list[bytes] = []
    if not _fits(raw_name, 100):
        pax.append(_pax_record("path", raw_name))
        raw_name = _short_name(raw_name)
    if not _fits(raw_link, 100):
        pax.append(_pax_record("linkpath", raw_link))
        raw_link = raw_link[:100] if raw_link.isascii() else b""
    if size > _MAX_OCTAL_12:
        pax.append(_pax_record("size", str(size).encode()))
    for key, number in (("uid", entry.uid), ("gid", entry.gid)):
        if number > _MAX_OCTAL_8:
            pax.append(_pax_record(key, str(number).encode()))
    if entry.mtime < 0 or entry.mtime > _MAX_OCTAL_12:
        pax.append(_pax_record("mtime", str(entry.mtime).encode()))
    for key, value in sorted(entry.xattrs):
        pax.append(_pax_record("SCHILY.xattr." + key, value))
    out = b""
    if pax:
        body = b"".join(pax)
        pax_name = b"PaxHeaders/" + _short_name(raw_name, 89)
        pax_entry = TarEntry(path="", type=EntryType.FILE, mode=0o644, size=len(body))
        out = _ustar(pax_name, pax_entry, b"x", len(body), b"") + body + _padding(len(body))
    return out + _ustar(raw_name, entry, entry.type.value.encode(), size, raw_link)


def _short_name(raw: bytes, limit: int = 100) -> bytes:
    """An ASCII stand-in for a name held in a PAX record (readers use the record)."""
    ascii_only = raw.decode("ascii", "replace").encode("ascii", "replace")
    if len(ascii_only) <= limit:
        return ascii_only
    base = posixpath.basename(ascii_only.rstrip(b"/"))
    return base[-limit:]


def _padding(size: int) -> bytes:
    return b"\x00" * (-size % BLOCK)


class _BackgroundDigester:
    """sha256 of a stream, computed on its own thread.

    hashlib releases the GIL for large updates, so hashing the uncompressed tar beside the
    compression (and the blob's own hash) uses another core. Small writes (tar headers) are
    gathered into 256 KiB batches first; the queue is bounded, so memory is too.
    """

    BATCH = 256 * 1024

    def __init__(self) -> None:
        self._digester = Digester("sha256")
        self._buffer = bytearray()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._run, daemon=True, name="cloche-sha256")
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._digester.update(chunk)

    def update(self, data: bytes) -> None:
        if len(data) >= self.BATCH and not self._buffer:
            self._queue.put(bytes(data))
            return
        self._buffer += data
        if len(self._buffer) >= self.BATCH:
            self._queue.put(bytes(self._buffer))
            self._buffer.clear()

    def digest(self) -> Digest:
        if self._buffer:
            self._queue.put(bytes(self._buffer))
            self._buffer.clear()
        self._queue.put(None)
        self._thread.join()
        return self._digester.digest()

    @property
    def size(self) -> int:
        return self._digester.size


class _HashingSink:
    """Counts and hashes the compressed bytes on their way to the real sink."""

    def __init__(self, sink: ByteSink, *, hashing: bool = True) -> None:
        self._sink = sink
        self.digester = _BackgroundDigester() if hashing else Digester("sha256")
        self.size = 0
        self._hashing = hashing

    def write(self, data: bytes) -> int:
        if self._hashing:
            self.digester.update(data)
        self.size += len(data)
        self._sink.write(data)
        return len(data)

    def flush(self) -> None:
        flush = getattr(self._sink, "flush", None)
        if flush:
            flush()


class TarWriter:
    """Writes entries into a compressed sink, hashing the tar and the blob in the same pass.

    Use as a context manager, or call ``close()``; ``result`` is set once closed. The caller
    owns ``sink`` and closes it. Entries are written in the order given: sorting is the
    caller's business (``tree.py`` and ``diff.py`` sort). Use a writer from the thread that
    made it: ISA-L's threaded gzip workers stop when their creating thread ends.
    """

    def __init__(self, sink: ByteSink, compression: Compression = Compression.GZIP, *,
                 level: int | None = None, threads: int | None = None) -> None:
        self._compression = compression
        # uncompressed: the blob is the tar, one hash serves as digest and diff_id
        self._blob = _HashingSink(sink, hashing=compression is not Compression.NONE)
        self._out = open_compressed_writer(self._blob, compression,  # type: ignore[arg-type]
                                           level=level, threads=threads)
        self._tar = _BackgroundDigester()
        self._entries = 0
        self.result: LayerBlob | None = None

    def _emit(self, data: bytes) -> None:
        self._tar.update(data)
        self._out.write(data)

    def add(self, entry: TarEntry, content: BinaryIO | None = None) -> None:
        """Write one entry; a FILE's content is streamed from ``content`` and must be exactly
        ``entry.size`` bytes (a file that changed size while being read is an error)."""
        if self.result is not None:
            raise LayerError("tar writer is closed")
        self._emit(encode_header(entry))
        self._entries += 1
        if entry.type is not EntryType.FILE or entry.size == 0:
            return
        if content is None:
            raise LayerError(f"{entry.path}: file entry of {entry.size} bytes without content")
        left = entry.size
        while left:
            chunk = content.read(min(CHUNK, left))
            if not chunk:
                raise LayerError(f"{entry.path}: file shrank while it was archived "
                                 f"({entry.size - left} of {entry.size} bytes)")
            self._emit(chunk)
            left -= len(chunk)
        self._emit(_padding(entry.size))

    def close(self) -> LayerBlob:
        """Write the end-of-archive blocks, finish compression, return the digests."""
        if self.result is None:
            self._emit(b"\x00" * (2 * BLOCK))
            self._out.close()
            self._blob.flush()
            diff_id = self._tar.digest()
            digest = diff_id if self._compression is Compression.NONE \
                else self._blob.digester.digest()
            self.result = LayerBlob(digest=digest, diff_id=diff_id, size=self._blob.size,
                                    compression=self._compression, entries=self._entries)
        return self.result

    def __enter__(self) -> TarWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self._out.close()
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
