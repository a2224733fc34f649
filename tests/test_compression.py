"""cloche.compression: every format sniffed and read back; cut, corrupt or mislabelled
streams give a DecompressionError naming the format, never a shorter valid result."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
from collections.abc import Callable

import pytest
import zstandard

from cloche.compression import (
    Compression,
    DecompressionError,
    detect_compression,
    open_decompressed,
)

PAYLOAD = b"".join(b"line %d of a layer\n" % i for i in range(20_000)) + os.urandom(200_000)

MAKERS: dict[Compression, Callable[[bytes], bytes]] = {
    Compression.GZIP: lambda d: gzip.compress(d, mtime=0),
    Compression.ZSTD: lambda d: zstandard.ZstdCompressor().compress(d),
    Compression.XZ: lzma.compress,
    Compression.BZIP2: bz2.compress,
    Compression.NONE: lambda d: d,
}
COMPRESSED = [c for c in MAKERS if c is not Compression.NONE]


def _read_all(blob: bytes, chunk: int = 65536) -> bytes:
    out = bytearray()
    with open_decompressed(io.BytesIO(blob)) as reader:
        while data := reader.read(chunk):
            out += data
    return bytes(out)


@pytest.mark.parametrize("kind", list(MAKERS))
def test_each_format_is_sniffed_and_read(kind: Compression) -> None:
    blob = MAKERS[kind](PAYLOAD)
    assert detect_compression(blob[:8]) is kind
    assert _read_all(blob) == PAYLOAD
    assert open_decompressed(io.BytesIO(blob)).read() == PAYLOAD  # read() with no size too


@pytest.mark.parametrize("head", [b"", b"\x1f", b"\x28\xb5\x2f", b"BZh", b"BZhx....",
                                  b"\xfd7zX", b"ustar\x00", b"hello world"])
def test_short_or_unknown_heads_are_plain(head: bytes) -> None:
    assert detect_compression(head) is Compression.NONE
    assert _read_all(head) == head


@pytest.mark.parametrize("kind", COMPRESSED)
@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_a_truncated_stream_is_an_error(kind: Compression, keep: float) -> None:
    blob = MAKERS[kind](PAYLOAD)
    with pytest.raises(DecompressionError, match=f"truncated {kind.value} stream"):
        _read_all(blob[: int(len(blob) * keep)])


@pytest.mark.parametrize("cut", [5, 6, 9, 12])
def test_zstd_cut_in_its_headers_is_an_error(cut: int) -> None:
    """zstandard's own stream reader ends quietly there: the frame walk must catch it."""
    blob = zstandard.ZstdCompressor(write_checksum=True).compress(PAYLOAD)
    with pytest.raises(DecompressionError, match="truncated zstd"):
        _read_all(blob[:cut])


def test_zstd_frames_of_every_shape_are_followed() -> None:
    """Several frames (multi-threaded writers make them), a checksum, a skippable frame and
    a frame without content size all decode, and cutting the last one is still seen."""
    parts = [zstandard.ZstdCompressor(threads=2, write_checksum=True).compress(PAYLOAD),
             b"\x5a\x2a\x4d\x18\x03\x00\x00\x00abc",  # a skippable frame of 3 bytes
             zstandard.ZstdCompressor(write_content_size=False).compress(b"tail")]
    blob = b"".join(parts)
    assert _read_all(blob, chunk=1000) == PAYLOAD + b"tail"
    with pytest.raises(DecompressionError, match="truncated zstd"):
        _read_all(blob[:-2])


@pytest.mark.parametrize("kind", [Compression.GZIP, Compression.XZ, Compression.BZIP2])
def test_corrupt_bytes_are_an_error(kind: Compression) -> None:
    blob = bytearray(MAKERS[kind](PAYLOAD))
    middle = len(blob) // 2
    blob[middle:middle + 16] = bytes(b ^ 0xFF for b in blob[middle:middle + 16])
    with pytest.raises(DecompressionError, match=f"corrupt {kind.value} stream"):
        _read_all(bytes(blob))


def test_concatenated_gzip_members_are_one_stream() -> None:
    blob = gzip.compress(b"one ") + gzip.compress(b"two")
    assert open_decompressed(io.BytesIO(blob)).read() == b"one two"


def test_a_stream_that_lies_about_its_compression() -> None:
    with pytest.raises(DecompressionError, match="announced as gzip but its bytes are none"):
        open_decompressed(io.BytesIO(b"plain tar bytes"), expect=Compression.GZIP)
    assert open_decompressed(io.BytesIO(gzip.compress(b"x")), expect=Compression.GZIP).read() == b"x"


@pytest.mark.parametrize("kind", list(MAKERS))
def test_closing_closes_the_source_only_when_asked(kind: Compression) -> None:
    for closefd in (False, True):
        source = io.BytesIO(MAKERS[kind](b"data"))
        reader = open_decompressed(source, closefd=closefd)
        assert reader.read() == b"data"
        reader.close()
        assert source.closed is closefd


class _Failing(io.RawIOBase):
    """A source whose device fails after some bytes: its OSError is not the content's fault."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._data:
            raise OSError(5, "Input/output error")
        n = min(len(buffer), len(self._data), 1000)
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


@pytest.mark.parametrize("kind", COMPRESSED)
def test_a_read_error_of_the_source_passes_through(kind: Compression) -> None:
    blob = MAKERS[kind](PAYLOAD)
    reader = open_decompressed(io.BufferedReader(_Failing(blob[: len(blob) // 2])))
    with pytest.raises(OSError) as caught:
        while reader.read(65536):
            pass
    assert caught.value.errno == 5
    assert not isinstance(caught.value, DecompressionError)


def test_media_types_and_names() -> None:
    assert Compression.GZIP.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert Compression.ZSTD.docker_media_type == "application/vnd.docker.image.rootfs.diff.tar.zstd"
    assert Compression.parse("uncompressed") is Compression.NONE
    assert Compression.from_media_type("application/vnd.oci.image.layer.v1.tar+zstd") is Compression.ZSTD
