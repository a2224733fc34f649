"""The blob store: verified, atomic writes; nothing corrupt under a digest name, ever."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cloche.errors import ImageNotFoundError, StoreError
from cloche.oci.digest import Digest, DigestMismatchError
from cloche.store.blobs import BlobNotFoundError, BlobStore


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "root")


def test_put_bytes_round_trip(blobs: BlobStore) -> None:
    d = blobs.put_bytes(b"hello")
    assert d == Digest.from_bytes(b"hello")
    assert blobs.has(d)
    assert blobs.size(d) == 5
    with blobs.open(d) as f:
        assert f.read() == b"hello"
    assert blobs.path(d) == blobs.root / "blobs" / "sha256" / d.hex
    assert blobs.path(d).stat().st_mode & 0o777 == 0o444


def test_streamed_writer_reports_digest_and_size(blobs: BlobStore) -> None:
    data = os.urandom(3 << 20)
    expected = Digest.from_bytes(data)
    with blobs.writer(expected) as w:
        for i in range(0, len(data), 65536):
            w.write(data[i:i + 65536])
    assert (w.digest, w.size) == (expected, len(data))
    assert blobs.read_bytes(expected) == data
    assert list(blobs.tmp_dir.iterdir()) == []


def test_mismatch_stores_nothing(blobs: BlobStore) -> None:
    wrong = Digest.from_bytes(b"something else")
    with pytest.raises(DigestMismatchError):
        with blobs.writer(wrong) as w:
            w.write(b"actual bytes")
    assert not blobs.has(wrong)
    assert not blobs.has(Digest.from_bytes(b"actual bytes"))
    assert list(blobs.digests()) == []
    assert list(blobs.tmp_dir.iterdir()) == []


def test_size_mismatch_stores_nothing(blobs: BlobStore) -> None:
    data = b"twelve bytes"
    with pytest.raises(DigestMismatchError):
        with blobs.writer(Digest.from_bytes(data), size=99) as w:
            w.write(data)
    assert list(blobs.digests()) == []


def test_a_writer_hashed_by_its_caller_stores_under_the_named_digest(blobs: BlobStore) -> None:
    data = b"layer bytes" * 1000
    with blobs.writer(hashed_by_caller=True) as w:
        w.write(data)
        w.name_as(Digest.from_bytes(data), len(data))
    assert w.digest == Digest.from_bytes(data) and blobs.read_bytes(w.digest) == data


def test_a_writer_hashed_by_its_caller_refuses_a_wrong_size_or_no_name(blobs: BlobStore) -> None:
    with pytest.raises(StoreError, match="5 bytes written, 6 named"):
        with blobs.writer(hashed_by_caller=True) as w:
            w.write(b"hello")
            w.name_as(Digest.from_bytes(b"hello!"), 6)
    with pytest.raises(StoreError, match="name_as was not called"):
        with blobs.writer(hashed_by_caller=True) as w:
            w.write(b"hello")
    assert list(blobs.digests()) == []
    assert not any(blobs.tmp_dir.iterdir())


def test_exception_in_block_discards(blobs: BlobStore) -> None:
    with pytest.raises(RuntimeError):
        with blobs.writer() as w:
            w.write(b"partial")
            raise RuntimeError("network dropped")
    assert list(blobs.digests()) == []
    assert list(blobs.tmp_dir.iterdir()) == []


def test_sha512_blob(blobs: BlobStore) -> None:
    expected = Digest.from_bytes(b"x", "sha512")
    assert blobs.put_bytes(b"x", expected) == expected
    assert blobs.path(expected).parent.name == "sha512"


def test_missing_blob_is_a_lookup_error(blobs: BlobStore) -> None:
    d = Digest.from_bytes(b"absent")
    with pytest.raises(BlobNotFoundError) as info:
        blobs.open(d)
    assert isinstance(info.value, ImageNotFoundError) and isinstance(info.value, LookupError)
    assert str(d) in info.value.render()
    with pytest.raises(BlobNotFoundError):
        blobs.size(d)


def test_writing_an_existing_blob_twice_is_harmless(blobs: BlobStore) -> None:
    a = blobs.put_bytes(b"same")
    b = blobs.put_bytes(b"same")
    assert a == b and list(blobs.digests()) == [a]


def test_check_detects_corruption_on_disk(blobs: BlobStore) -> None:
    d = blobs.put_bytes(b"good")
    blobs.check(d)
    path = blobs.path(d)
    path.chmod(0o644)
    path.write_bytes(b"evil")
    with pytest.raises(DigestMismatchError):
        blobs.check(d)


def test_writer_killed_midway_leaves_no_blob(blobs: BlobStore) -> None:
    """SIGKILL while streaming: only a temporary file is left, never the final name."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from cloche.store.blobs import BlobStore
        store = BlobStore(Path({str(blobs.root)!r}))
        with store.writer() as w:
            w.write(b"a" * (1 << 20))
            print("written", flush=True)
            time.sleep(60)
            w.write(b"b" * 10)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert list(blobs.digests()) == []
    leftovers = list(blobs.tmp_dir.iterdir())
    assert len(leftovers) == 1
    assert not blobs.has(Digest.from_bytes(b"a" * (1 << 20)))
    assert not blobs.has(Digest.from_bytes(b"a" * (1 << 20) + b"b" * 10))
    assert blobs.clean_tmp(older_than=0) == 1 << 20
    assert list(blobs.tmp_dir.iterdir()) == []
