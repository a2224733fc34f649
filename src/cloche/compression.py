"""Compressed streams: which compression a stream uses, and its decompressed bytes.

The one place that knows compression magic numbers. Everything that reads possibly compressed
bytes (image layers, docker-archives, ``cloche load`` archives, ADD's local archives, a build
context on stdin) sniffs and opens them here, so every reader accepts the same formats: gzip
(through ISA-L, several times faster than zlib), zstd, xz, bzip2 and plain data, decided by the
bytes, never by a file name or a media type alone. It sits at the bottom of the package graph
(standard library, isal, zstandard and ``cloche.errors`` only) so that the image core and the
file-system helpers can use it.

A corrupt or cut stream must never pass for a shorter valid one: every decompressor's error
becomes one ``DecompressionError`` naming the format, and zstd, whose stream reader ends quietly
on a truncated frame, is followed frame by frame so that its truncation is an error too.
Writing layers (levels, ISA-L threads) is ``cloche.layers.compress``'s business.
"""

from __future__ import annotations

import bz2
import enum
import io
import lzma
from typing import BinaryIO, cast

import zstandard
from isal import igzip, igzip_lib

from cloche.errors import ClocheError, LayerError

__all__ = ["Compression", "DecompressionError", "UnsupportedCompressionError",
           "detect_compression", "open_decompressed", "SNIFF_SIZE"]

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BZIP2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"
SNIFF_SIZE = 8  # enough bytes of a stream's head for detect_compression
_READ = 1 << 16
_ISAL_ERROR = cast("type[Exception]", igzip_lib.IsalError)  # typed as an instance in isal


class UnsupportedCompressionError(LayerError):
    """A compression that cloche can read but not write (bzip2, xz), or an unknown name."""


class DecompressionError(ClocheError, ValueError):
    """Compressed bytes that cannot be decompressed: corrupt, truncated, or not what was
    announced. The message names the format."""


class Compression(enum.Enum):
    """How a stream (a layer blob) is compressed; ``value`` is the name used in options and
    media types."""

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


def detect_compression(head: bytes) -> Compression:
    """The compression whose magic number starts ``head`` (NONE when none matches, a short
    head included); ``SNIFF_SIZE`` bytes are enough."""
    if head.startswith(_GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(_ZSTD_MAGIC):
        return Compression.ZSTD
    if head.startswith(_XZ_MAGIC):
        return Compression.XZ
    if head.startswith(_BZIP2_MAGIC) and len(head) >= 4 and head[3:4] in b"123456789":
        return Compression.BZIP2
    return Compression.NONE


def open_decompressed(stream: BinaryIO, *, expect: Compression | None = None,
                      closefd: bool = False) -> BinaryIO:
    """A binary reader of ``stream``'s decompressed bytes, the format sniffed from its magic.

    ``expect`` (from a media type) is checked against what the bytes say, so a layer labelled
    gzip that is really plain is reported, not silently misread. Closing the reader closes
    ``stream`` only with ``closefd`` (the reader then owns it). Read errors of a compressed stream are
    ``DecompressionError``; those of ``stream`` itself (an OSError with an errno, a
    ClocheError such as a digest mismatch) pass through unchanged.
    """
    buffered = io.BufferedReader(_Source(stream, closefd), buffer_size=_READ)
    found = detect_compression(buffered.peek(SNIFF_SIZE)[:SNIFF_SIZE])
    if expect is not None and expect is not found:
        buffered.close()
        raise DecompressionError(f"stream announced as {expect.value} but its bytes are "
                                 f"{found.value}")
    if found is Compression.NONE:
        return cast(BinaryIO, buffered)
    inner: io.BufferedIOBase
    if found is Compression.GZIP:
        # single-threaded on purpose: igzip_threaded's reader stops silently (a short read,
        # not an error) when the thread that opened it exits, and build steps hop threads
        inner = igzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[no-untyped-call]
    elif found is Compression.ZSTD:
        tracked = _ZstdFrames(buffered)
        reader = zstandard.ZstdDecompressor().stream_reader(
            cast(BinaryIO, tracked), read_across_frames=True, closefd=False)
        inner = io.BufferedReader(cast(io.RawIOBase, reader), buffer_size=1 << 20)
        return cast(BinaryIO, _Checked(inner, buffered, found, tracked))
    elif found is Compression.BZIP2:
        inner = bz2.BZ2File(buffered, "rb")
    else:
        inner = lzma.LZMAFile(buffered, "rb")
    return cast(BinaryIO, _Checked(inner, buffered, found, None))


class _Source(io.RawIOBase):
    """Adapts any object with ``read`` to a raw stream that BufferedReader can peek into;
    closing it closes the caller's stream only with ``closefd``."""

    def __init__(self, stream: BinaryIO, closefd: bool) -> None:
        self._stream = stream
        self._closefd = closefd

    def close(self) -> None:
        try:
            if self._closefd and not self.closed:
                self._stream.close()
        finally:
            super().close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._stream.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n


class _ZstdFrames:
    """Follows the zstd frame layout (RFC 8878) of the compressed bytes as the decoder pulls
    them, so that a stream cut inside a frame is known at its end. Blocks are skipped by
    their declared size, never decoded: this costs a few header reads per 128 KiB block."""

    def __init__(self, source: io.BufferedIOBase) -> None:
        self._source = source
        self._need = 0                 # bytes still to skip (block content, skippable frame)
        self._header = b""             # partial header being collected
        self._state = "magic"          # what the next bytes are
        self._want = 4                 # header bytes wanted in that state
        self._checksum = False
        self.complete = True           # between frames: the end of input is fine here
        self.untracked = False         # bytes that are not zstd: left for the decoder to judge

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size if size is not None and size > 0 else _READ)
        if data and not self.untracked:
            self._feed(memoryview(data))
        return data

    def _feed(self, data: memoryview) -> None:
        pos = 0
        while pos < len(data) and not self.untracked:
            if self._need:
                step = min(self._need, len(data) - pos)
                self._need -= step
                pos += step
                if not self._need and self._state == "magic":
                    self.complete = True
                continue
            take = min(self._want - len(self._header), len(data) - pos)
            self._header += bytes(data[pos:pos + take])
            pos += take
            if len(self._header) == self._want:
                header, self._header = self._header, b""
                self._step(header)

    def _step(self, header: bytes) -> None:
        self.complete = False
        if self._state == "magic":
            if header == _ZSTD_MAGIC:
                self._state, self._want = "descriptor", 1
            elif header[1:] == b"\x2a\x4d\x18" and header[0] & 0xF0 == 0x50:
                self._state, self._want = "skippable", 4
            else:
                self.untracked = True
        elif self._state == "skippable":
            self._need = int.from_bytes(header, "little")
            self._state, self._want = "magic", 4
            self.complete = self._need == 0
        elif self._state == "descriptor":
            fhd = header[0]
            single = bool(fhd & 0x20)
            self._checksum = bool(fhd & 0x04)
            fcs = (1 if single else 0, 2, 4, 8)[fhd >> 6]
            rest = (0 if single else 1) + (0, 1, 2, 4)[fhd & 0x03] + fcs
            self._state, self._want = "block", 3
            self._need = rest
        elif self._state == "block":
            value = int.from_bytes(header, "little")
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            self._need = 1 if kind == 1 else size
            if last:
                self._state, self._want = "magic", 4
                self._need += 4 if self._checksum else 0
                self.complete = self._need == 0


class _Checked(io.BufferedIOBase):
    """A decompressed stream whose decoder errors all become ``DecompressionError``."""

    def __init__(self, inner: io.BufferedIOBase, source: io.BufferedIOBase, kind: Compression,
                 frames: _ZstdFrames | None) -> None:
        self._inner = inner
        self._source = source  # the decoders do not close what they read from
        self._kind = kind
        self._frames = frames

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            data = self._inner.read(size)
        except ClocheError:
            raise
        except (EOFError, lzma.LZMAError, zstandard.ZstdError, _ISAL_ERROR) as e:
            raise self._error(e) from e
        except OSError as e:
            if e.errno is not None:
                raise  # the source's own failure, not its content
            raise self._error(e) from e
        if not data and size != 0 and self._frames is not None and not self._frames.complete:
            raise DecompressionError(f"truncated {self._kind.value} stream: it ends inside a "
                                     "frame")
        return data

    def read1(self, size: int = -1) -> bytes:
        return self.read(size if size >= 0 else _READ)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _error(self, e: BaseException) -> DecompressionError:
        what = "truncated" if isinstance(e, EOFError) else "corrupt"
        return DecompressionError(f"{what} {self._kind.value} stream: {e}")

    def close(self) -> None:
        try:
            self._inner.close()
            self._source.close()
        finally:
            super().close()
