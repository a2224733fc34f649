"""Layer compression: streaming writers for none/gzip/zstd, and a reader that sniffs magic bytes.

Why here and not in the OCI core: a layer is written once, in one pass, while its uncompressed
(diff_id) and compressed (digest) hashes are both computed; the writer below is what that pass
pushes bytes through. gzip goes through ISA-L (``isal``), several times faster than zlib; big
layers use ``igzip_threaded`` so both cores compress. The gzip header carries no name and a zero
mtime, so the same tar always gives the same blob. Reading accepts anything ``docker build``'s
ADD auto-extraction accepts (gzip, zstd, bzip2, xz, plain), decided by magic bytes, never by
the file name or the media type alone.
"""

from __future__ import annotations

import bz2
import enum
import io
import lzma
import os
from typing import BinaryIO

import zstandard
from isal import igzip, igzip_threaded

from cloche.errors import LayerError

__all__ = [
    "Compression", "detect_compression", "open_compressed_writer", "open_decompressed_reader",
    "UnsupportedCompressionError",
]

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BZIP2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"


class UnsupportedCompressionError(LayerError):
    """A compression that cloche can read but not write (bzip2, xz), or an unknown name."""


class Compression(enum.Enum):
    """How a layer blob is compressed. ``value`` is the name used in options and media types."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"
    BZIP2 = "bzip2"
    XZ = "xz"

    @classmethod
    def parse(cls, name: str) -> Compression:
        """``none|uncompressed|gzip|zstd`` (as ``--output compression=`` takes them)."""
        key = name.strip().lower()
        if key in ("uncompressed", ""):
            key = "none"
        try:
            return cls(key)
        except ValueError:
            raise UnsupportedCompressionError(
                f"unknown compression {name!r}: want none, gzip or zstd") from None

    @property
    def media_type(self) -> str:
        """The OCI layer media type for a tar compressed this way."""
        try:
            return _OCI_MEDIA_TYPES[self]
        except KeyError:
            raise UnsupportedCompressionError(
                f"no OCI layer media type for {self.value} compression") from None

    @property
    def docker_media_type(self) -> str:
        """Docker schema 2's name for the same layer type."""
        try:
            return _DOCKER_MEDIA_TYPES[self]
        except KeyError:
            raise UnsupportedCompressionError(
                f"no Docker layer media type for {self.value} compression") from None

    @classmethod
    def from_media_type(cls, media_type: str) -> Compression:
        """The compression a layer media type announces (OCI or Docker names)."""
        base = media_type.strip().lower()
        if base.endswith(("+gzip", ".gzip")):
            return cls.GZIP
        if base.endswith(("+zstd", ".zstd")):
            return cls.ZSTD
        if base.endswith((".tar", "v1.tar")):
            return cls.NONE
        raise UnsupportedCompressionError(f"not a layer media type: {media_type!r}")


_OCI_MEDIA_TYPES = {
    Compression.NONE: "application/vnd.oci.image.layer.v1.tar",
    Compression.GZIP: "application/vnd.oci.image.layer.v1.tar+gzip",
    Compression.ZSTD: "application/vnd.oci.image.layer.v1.tar+zstd",
}
_DOCKER_MEDIA_TYPES = {
    Compression.NONE: "application/vnd.docker.image.rootfs.diff.tar",
    Compression.GZIP: "application/vnd.docker.image.rootfs.diff.tar.gzip",
    Compression.ZSTD: "application/vnd.docker.image.rootfs.diff.tar.zstd",
}

DEFAULT_GZIP_LEVEL = 2   # ISA-L levels are 0..3; 2 is its speed/size trade-off
DEFAULT_ZSTD_LEVEL = 3


def detect_compression(head: bytes) -> Compression:
    """The compression whose magic number starts ``head`` (NONE when no magic matches)."""
    if head.startswith(_GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(_ZSTD_MAGIC):
        return Compression.ZSTD
    if head.startswith(_XZ_MAGIC):
        return Compression.XZ
    if head.startswith(_BZIP2_MAGIC) and len(head) >= 4 and head[3:4] in b"123456789":
        return Compression.BZIP2
    return Compression.NONE


class _Uncloseable(io.RawIOBase):
    """Forwards writes to a sink but never closes it: the caller owns the sink."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self._sink.write(data)
        return len(data)


def _default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def open_compressed_writer(sink: BinaryIO, compression: Compression, *,
                           level: int | None = None, threads: int | None = None) -> BinaryIO:
    """A binary writer that compresses into ``sink``; closing it finishes the stream only.

    ``threads`` (default: the usable cores) applies to gzip and zstd; the output does not
    depend on it for gzip (ISA-L compresses fixed 1 MiB blocks with the previous block as
    dictionary) and zstd's multi-threaded format does not depend on the worker count either.
    """
    n = _default_threads() if threads is None else max(1, threads)
    target = _Uncloseable(sink)
    if compression is Compression.NONE:
        return io.BufferedWriter(target, buffer_size=1 << 20)  # type: ignore[return-value]
    if compression is Compression.GZIP:
        lvl = DEFAULT_GZIP_LEVEL if level is None else level
        if not 0 <= lvl <= 3:
            raise UnsupportedCompressionError(f"gzip level {lvl} out of range 0..3 (ISA-L)")
        if n > 1:
            return igzip_threaded.open(target, "wb", compresslevel=lvl,  # type: ignore[return-value]
                                       threads=n)
        return igzip.GzipFile(fileobj=target, mode="wb", compresslevel=lvl,  # type: ignore[return-value]
                              mtime=0, filename="")
    if compression is Compression.ZSTD:
        lvl = DEFAULT_ZSTD_LEVEL if level is None else level
        cctx = zstandard.ZstdCompressor(level=lvl, threads=n if n > 1 else 0,
                                        write_content_size=False)
        return cctx.stream_writer(target, closefd=False)  # type: ignore[return-value]
    raise UnsupportedCompressionError(f"cannot write {compression.value} layers")


def open_decompressed_reader(stream: BinaryIO, *, expect: Compression | None = None) -> BinaryIO:
    """A binary reader of ``stream``'s decompressed bytes, the format sniffed from its magic.

    ``expect`` (from a media type) is checked against what the bytes say, so a layer labelled
    gzip that is really plain is reported, not silently misread.
    """
    buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(
        _ReadOnly(stream), buffer_size=1 << 16)
    found = detect_compression(buffered.peek(8)[:8])
    if expect is not None and expect is not found:
        raise LayerError(f"layer announced as {expect.value} but its bytes are {found.value}")
    if found is Compression.NONE:
        return buffered
    if found is Compression.GZIP:
        # single-threaded on purpose: igzip_threaded's reader stops silently (a short read,
        # not an error) when the thread that opened it exits, and build steps hop threads
        return igzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    if found is Compression.ZSTD:
        reader = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True,
                                                            closefd=False)
        return io.BufferedReader(reader, buffer_size=1 << 20)  # type: ignore[arg-type]
    if found is Compression.BZIP2:
        return bz2.BZ2File(buffered, "rb")  # type: ignore[return-value]
    return lzma.LZMAFile(buffered, "rb")  # type: ignore[return-value]


class _ReadOnly(io.RawIOBase):
    """Adapts any object with ``read`` to a raw stream that BufferedReader can peek into."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self._stream.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n
