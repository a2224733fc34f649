"""ADD of a local archive and a build context sent on stdin: tar streams extracted safely.

The extraction is ``cloche.fs.extract.Extractor``, the same code that applies image layers,
with ADD's rules switched on: no whiteouts (a ``.wh.`` file is a file), a relative symlink
whose target climbs out of the destination is refused (as Docker's archive package does), the
root entry leaves the destination's own metadata alone, and owners come from the tar, from
``--chown``, or are reset to 0:0. Entries are read by ``cloche.layers``' tar reader, which
refuses names that climb out with '..'; parents are resolved with the extraction directory as
``/``. Compression is recognised by its magic bytes (``cloche.compression``: gzip, bzip2, xz,
zstd), never by the file name, and everything is streamed.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cloche.compression import DecompressionError, open_decompressed
from cloche.engine.fsutil import Owner
from cloche.errors import ClocheError, LayerError, UnsafePathError
from cloche.fs.extract import ExtractError, Extractor
from cloche.fs.regular import NotRegularFileError, open_regular
from cloche.layers.reader import LayerReader

__all__ = ["ArchiveError", "Prefixed", "ExtractResult", "extract_tar", "is_tar_archive"]


class ArchiveError(ClocheError, ValueError):
    """A tar or compressed stream that cannot be read."""


@dataclass(frozen=True)
class ExtractResult:
    entries: int
    bytes: int


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


def is_tar_archive(path: Path) -> bool:
    """Whether ``path`` holds a (possibly compressed) tar with at least one entry.

    This is BuildKit's test for ADD: decompress, then read one tar header. Only a regular file
    can be one (BuildKit's ``isArchivePath`` says no to any other type): a FIFO or a device in
    the context is never opened, since opening one may block for ever or act on the device.
    """
    try:
        fd = open_regular(path, what=str(path))
    except (NotRegularFileError, OSError):
        return False
    try:
        with os.fdopen(fd, "rb") as raw, open_decompressed(raw) as data:
            with tarfile.open(fileobj=data, mode="r|") as tf:
                return tf.next() is not None
    except (tarfile.TarError, OSError, EOFError, DecompressionError):
        return False


def extract_tar(raw: BinaryIO, dest: Path, *, owner: Owner | None = None,
                label: str = "archive", keep_owner: bool = True) -> ExtractResult:
    """Extract a (possibly compressed) tar stream into the existing directory ``dest``.

    Owners come from the tar unless ``owner`` is given (ADD --chown) or ``keep_owner`` is
    False (0:0). Directory modes and times are set last, after their contents are written.
    """
    ids = (owner.uid, owner.gid) if owner is not None else None if keep_owner else (0, 0)
    extractor = Extractor(dest, same_owner=True, owner=ids, whiteouts=False,
                          confine_symlinks=True, root_metadata=False)
    try:
        count = extractor.extract(LayerReader(raw))
    except UnsafePathError as e:
        raise UnsafePathError(f"{label}: {e.message}") from e
    except DecompressionError as e:
        raise ArchiveError(f"{label}: {e.message}") from e
    except LayerError as e:  # the reader's: the bytes are not a readable tar
        cause = e.__cause__
        message = cause.message if isinstance(cause, DecompressionError) else e.message
        raise ArchiveError(f"{label}: cannot read the tar: {message}") from e
    except ExtractError as e:  # an entry that cannot be written
        raise ArchiveError(f"{label}: {e.message}") from e
    return ExtractResult(count, extractor.bytes)
