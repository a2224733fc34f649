"""Layer compression, the writing side: streaming none/gzip/zstd writers for new layers.

Why here and not in ``cloche.compression`` (which sniffs and reads every format): a layer is
written once, in one pass, while its uncompressed (diff_id) and compressed (digest) hashes are
both computed; the writer below is what that pass pushes bytes through. gzip goes through ISA-L
(``isal``), several times faster than zlib, through ``igzip_threaded`` so every core
compresses. The gzip header carries no name and a zero mtime, and neither format's bytes
depend on the number of cores, so the same tar always gives the same blob on any machine.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO, cast

import zstandard
from isal import igzip_threaded

from cloche.compression import Compression, UnsupportedCompressionError

__all__ = ["DEFAULT_GZIP_LEVEL", "DEFAULT_ZSTD_LEVEL", "open_compressed_writer"]

DEFAULT_GZIP_LEVEL = 2   # ISA-L levels are 0..3; 2 is its speed/size trade-off
DEFAULT_ZSTD_LEVEL = 3


class _Uncloseable(io.RawIOBase):
    """Forwards writes to a sink but never closes it: the caller owns the sink."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._sink.write(data)
        return len(data)


def _default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def open_compressed_writer(sink: BinaryIO, compression: Compression, *,
                           level: int | None = None, threads: int | None = None) -> BinaryIO:
    """A binary writer that compresses into ``sink``; closing it finishes the stream only.

    ``threads`` (default: the usable cores) applies to gzip and zstd; the output does not
    depend on it for gzip (ISA-L compresses fixed 1 MiB blocks with the previous block as
    dictionary, with one worker too) and zstd's multi-threaded format does not depend on the
    worker count either (one worker is used, never zstd's single-threaded mode).
    """
    n = _default_threads() if threads is None else max(1, threads)
    target = _Uncloseable(sink)
    if compression is Compression.NONE:
        return cast(BinaryIO, io.BufferedWriter(target, buffer_size=1 << 20))
    if compression is Compression.GZIP:
        lvl = DEFAULT_GZIP_LEVEL if level is None else level
        if not 0 <= lvl <= 3:
            raise UnsupportedCompressionError(f"gzip level {lvl} out of range 0..3 (ISA-L)")
        # always the block writer, one thread or more: a single-stream GzipFile gives other
        # bytes, and a layer's digest must not depend on how many cores the machine has
        return cast(BinaryIO, igzip_threaded.open(  # type: ignore[no-untyped-call]
            target, "wb", compresslevel=lvl, threads=n))
    if compression is Compression.ZSTD:
        lvl = DEFAULT_ZSTD_LEVEL if level is None else level
        # one worker or more, never none: zstd's single-threaded mode cuts a big stream
        # into other blocks, so one core would give another digest than two
        cctx = zstandard.ZstdCompressor(level=lvl, threads=n, write_content_size=False)
        return cast(BinaryIO, cctx.stream_writer(cast(BinaryIO, target), closefd=False))
    raise UnsupportedCompressionError(f"cannot write {compression.value} layers")
