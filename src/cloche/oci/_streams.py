"""Stream helpers: verify bytes while they flow, and bound a reader to a window of a file.

Sniffing and decompressing layers is ``cloche.compression``'s job (the one module that knows
compression magic numbers); writing compressed layers is cloche.layers'.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from cloche.oci.digest import Digest, Digester, verify
from cloche.oci.errors import ImageFormatError


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


def copy_stream(src: BinaryIO, dst: BinaryIO, chunk_size: int = 1 << 20) -> int:
    total = 0
    while chunk := src.read(chunk_size):
        dst.write(chunk)
        total += len(chunk)
    return total
