"""Layer compression writers: every output is read back by independent tools (reading and
sniffing are tested with cloche.compression, in tests/test_compression.py)."""

from __future__ import annotations

import gzip
import io
import os
import subprocess

import pytest

from cloche.compression import Compression, UnsupportedCompressionError, detect_compression
from cloche.layers.compress import open_compressed_writer
from tests.fixtures.services import require_tool

PAYLOAD = b"".join(b"line %d of a layer\n" % i for i in range(50_000)) + os.urandom(300_000)


def _compress(compression: Compression, threads: int | None = None, data: bytes = PAYLOAD) -> bytes:
    sink = io.BytesIO()
    with open_compressed_writer(sink, compression, threads=threads) as w:
        for i in range(0, len(data), 100_000):
            w.write(data[i:i + 100_000])
    assert not sink.closed  # the caller owns the sink
    return sink.getvalue()


@pytest.mark.parametrize("threads", [1, 2])
def test_gzip_is_read_by_zlib_and_has_no_name_or_time(threads: int) -> None:
    blob = _compress(Compression.GZIP, threads)
    assert gzip.decompress(blob) == PAYLOAD
    assert blob[4:8] == b"\x00\x00\x00\x00"      # mtime 0
    assert not blob[3] & 0x08                     # no FNAME
    assert detect_compression(blob) is Compression.GZIP


def test_gzip_output_does_not_depend_on_thread_count() -> None:
    assert _compress(Compression.GZIP, 2) == _compress(Compression.GZIP, 4)


def test_zstd_is_read_by_the_zstd_tool() -> None:
    zstd = require_tool("zstd", "apt-get install zstd")
    blob = _compress(Compression.ZSTD, 2)
    out = subprocess.run([zstd, "-dc"], input=blob, capture_output=True, check=True).stdout
    assert out == PAYLOAD
    assert detect_compression(blob) is Compression.ZSTD


def test_none_passes_bytes_through() -> None:
    assert _compress(Compression.NONE) == PAYLOAD


def test_media_types_and_names() -> None:
    assert Compression.GZIP.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert Compression.ZSTD.media_type == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert Compression.NONE.media_type == "application/vnd.oci.image.layer.v1.tar"
    assert Compression.GZIP.docker_media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert Compression.parse("uncompressed") is Compression.NONE
    docker_gzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert Compression.from_media_type(docker_gzip) is Compression.GZIP
    assert Compression.from_media_type("application/vnd.oci.image.layer.v1.tar") is Compression.NONE
    with pytest.raises(UnsupportedCompressionError):
        Compression.parse("lz4")
    with pytest.raises(UnsupportedCompressionError):
        _ = Compression.XZ.media_type
    with pytest.raises(UnsupportedCompressionError):
        open_compressed_writer(io.BytesIO(), Compression.BZIP2)


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD])
def test_the_bytes_do_not_depend_on_the_number_of_cores(compression: Compression) -> None:
    """A machine with one core gives the blob a machine with two gives (reproducible builds):
    neither ISA-L's single-stream writer nor zstd's single-threaded mode is used, as both cut
    the stream differently. 24 MiB: more than a zstd job at the default level."""
    import random

    rng = random.Random(7)
    data = b"".join(os.urandom(40_000) if rng.random() < 0.3 else
                    bytes([rng.randrange(256)]) * 40_000 for _ in range(600))
    one = _compress(compression, 1, data)
    assert one == _compress(compression, 2, data) == _compress(compression, 3, data)
