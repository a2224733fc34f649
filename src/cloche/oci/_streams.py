"""Stream helpers: verify bytes while they flow, bound a reader to a window of a file, and open
a layer's uncompressed tar by its magic number.

The image core only needs to *read* compressed layers (to check diff ids and to write
docker-archives, where layers are stored uncompressed); writing compressed layers is
cloche.layers' job, and the layers package sits above this one, so this does not import it.
"""

from __future__ import annotations

import gzip
import io
from typing import BinaryIO

from cloche.oci.digest import Digest, Digester, verify
from cloche.oci.errors import ImageFormatError

try:  # isal's gzip is several times faster than zlib's; same API
    from isal import igzip as _gzip  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - isal is a declared dependency
    _gzip = gzip  # type: ignore[assignment]

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class VerifyingReader(io.RawIOBase):
    """Reads through to ``inner`` and, at end of stream, checks size and digest; a mismatch
    raises DigestMismatchError (or ImageFormatError for a size) from the read that hit EOF,
    so a consumer never finishes reading bad bytes without being told."""

    def __init__(self, inner: BinaryIO, expected: Digest, size: int | None = None,
                 what: str = "blob") -> None:
        self._inner = inner
        self._expected = expected
        self._size = size
        self._what = what
        self._digester = Digester(expected.algorithm)
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        if not data:
            self._check()
            return 0
        self._digester.update(data)
        if self._size is not None and self._digester.size > self._size:
            raise ImageFormatError(f"{self._what} {self._expected} is larger than its "
                                   f"declared size {self._size}")
        buffer[: len(data)] = data
        return len(data)

    def _check(self) -> None:
        if self._checked:
            return
        self._checked = True
        if self._size is not None and self._digester.size != self._size:
            raise ImageFormatError(f"{self._what} {self._expected} has {self._digester.size} "
                                   f"bytes, expected {self._size}")
        verify(self._expected, self._digester.digest(), self._what)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()


class WindowReader(io.RawIOBase):
    """``size`` bytes of a file from ``offset`` on, with its own file handle (so several
    can be read at once, from several threads)."""

    def __init__(self, path: str, offset: int, size: int) -> None:
        self._file = open(path, "rb")
        self._file.seek(offset)
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        n = self._file.readinto(memoryview(buffer)[: min(len(buffer), self._left)])
        if not n:
            raise ImageFormatError(f"{self._file.name} is truncated")
        self._left -= n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


class _Prefixed(io.RawIOBase):
    """A stream with some already-read bytes put back in front of it."""

    def __init__(self, prefix: bytes, inner: BinaryIO) -> None:
        self._prefix = prefix
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._inner.close()
        super().close()


def detect_compression(head: bytes) -> str:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def open_decompressed(stream: BinaryIO) -> BinaryIO:
    """The uncompressed bytes of a gzip, zstd or plain stream, chosen by magic number."""
    head = b""
    while len(head) < 4:
        chunk = stream.read(4 - len(head))
        if not chunk:
            break
        head += chunk
    raw = io.BufferedReader(_Prefixed(head, stream), 1 << 16)
    kind = detect_compression(head)
    if kind == "gzip":
        return _gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if kind == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(  # type: ignore[return-value]
            raw, read_across_frames=True, closefd=True)
    return raw  # type: ignore[return-value]


def copy_stream(src: BinaryIO, dst: BinaryIO, chunk_size: int = 1 << 20) -> int:
    total = 0
    while chunk := src.read(chunk_size):
        dst.write(chunk)
        total += len(chunk)
    return total
