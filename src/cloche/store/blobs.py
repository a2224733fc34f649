"""The content-addressed blob store: ``blobs/<algorithm>/<hex>`` as in an OCI image layout.

A blob's file name is its digest, so a blob is either absent or complete and correct: bytes are
written to a temporary file in ``<root>/tmp`` (same file system), hashed as they flow, fsynced,
checked against the digest the caller expected, and only then renamed to their final name.
A crash, a ``kill -9`` or a digest mismatch leaves at most a temporary file, which ``gc``
removes later; never a truncated or wrong blob under a digest name. Two processes writing the
same blob race harmlessly: both renames put identical bytes in place.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from cloche.errors import ImageNotFoundError, StoreError
from cloche.fs.rmtree import rmtree
from cloche.oci.digest import Digest, Digester, DigestMismatchError, verify
from cloche.oci.errors import BlobNotFoundError as OciBlobNotFoundError

CHUNK = 1 << 20


class BlobNotFoundError(ImageNotFoundError, OciBlobNotFoundError):
    """A blob the store was asked for is not in it (both a store and an image-core error)."""

    def __init__(self, digest: Digest) -> None:
        super().__init__(f"blob {digest} is not in the local store")
        self.digest = digest
        self.source = "local store"


class BlobSizeMismatchError(DigestMismatchError):
    """Bytes whose digest matched but whose length is not the one announced (or the reverse)."""


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobWriter:
    """Streams one blob into the store; see ``BlobStore.writer``.

    After a clean exit from the ``with`` block, ``digest``, ``size`` and ``path`` are set.
    A writer made with ``hashed_by_caller`` does not hash what goes through it: the caller,
    which hashed the same bytes on their way here (a layer's tar writer does), names the blob
    with ``name_as`` before the block ends. Saves a second sha256 pass over big layers.
    """

    def __init__(self, store: BlobStore, expected: Digest | None, expected_size: int | None,
                 hashed_by_caller: bool = False) -> None:
        self._store = store
        self._expected = expected
        self._expected_size = expected_size
        self._digester: Digester | None = None if hashed_by_caller else \
            Digester(expected.algorithm if expected else "sha256")
        self._named: Digest | None = None
        self._written = 0
        self._file: BinaryIO | None = None
        self._tmp: Path | None = None
        self.digest: Digest | None = None
        self.size: int | None = None
        self.path: Path | None = None

    def __enter__(self) -> BlobWriter:
        fd, name = tempfile.mkstemp(dir=self._store.tmp_dir, prefix=f"blob-{os.getpid()}-")
        self._tmp = Path(name)
        self._file = os.fdopen(fd, "wb")
        return self

    def write(self, chunk: bytes) -> int:
        if self._file is None:
            raise StoreError("blob writer used outside its 'with' block")
        if self._digester is not None:
            self._digester.update(chunk)
        self._written += len(chunk)
        return self._file.write(chunk)

    def name_as(self, digest: Digest, size: int) -> None:
        """The digest of what was written, computed by the caller (``hashed_by_caller``)."""
        if size != self._written:
            raise StoreError(f"blob {digest}: {self._written} bytes written, {size} named")
        self._named = digest

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._commit()
        except BaseException:
            self._discard()
            raise

    def _commit(self) -> None:
        assert self._file is not None and self._tmp is not None
        if self._digester is not None:
            digest, size = self._digester.digest(), self._digester.size
        elif self._named is not None:
            digest, size = self._named, self._written
        else:
            raise StoreError("blob writer closed without a digest (name_as was not called)")
        if self._expected is not None:
            verify(self._expected, digest, "blob")
        if self._expected_size is not None and size != self._expected_size:
            raise BlobSizeMismatchError(
                f"blob {digest} is {size} bytes, expected {self._expected_size}",
                expected=self._expected or digest, actual=digest)
        self._file.flush()
        os.fsync(self._file.fileno())
        os.fchmod(self._file.fileno(), 0o444)  # blobs are immutable; say so on disk too
        self._file.close()
        self._file = None
        final = self._store.path(digest)
        if final.exists():
            self._tmp.unlink(missing_ok=True)  # same bytes already stored (maybe by a peer)
            self._store.touch(digest)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(self._tmp, final)
            fsync_dir(final.parent)
        self._tmp = None
        self.digest, self.size, self.path = digest, size, final


class BlobStore:
    """Blobs under ``<root>/blobs``, temporary files under ``<root>/tmp``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs"
        self.tmp_dir = root / "tmp"
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: Digest) -> Path:
        """Where the blob lives (whether or not it is there yet)."""
        return self.blobs_dir / digest.algorithm / digest.hex

    def has(self, digest: Digest) -> bool:
        """Whether the blob is stored; a yes also refreshes its mtime.

        Callers ask ``has`` right before relying on a blob they will not write again (a pull
        skipping a layer it already has), so the refresh keeps a concurrent ``gc`` from
        deleting it in the window before the image that needs it is named.
        """
        if not self.exists(digest):
            return False
        self.touch(digest)
        return True

    def exists(self, digest: Digest) -> bool:
        """Whether the blob is stored, without refreshing it (for listings and ``gc``)."""
        return self.path(digest).is_file()

    def size(self, digest: Digest) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError(digest) from None

    def open(self, digest: Digest) -> BinaryIO:
        """A binary file object reading the blob; the caller closes it."""
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFoundError(digest) from None

    def read_bytes(self, digest: Digest) -> bytes:
        """The whole blob: only for small blobs (manifests, configs)."""
        with self.open(digest) as f:
            return f.read()

    def writer(self, expected: Digest | None = None, *, size: int | None = None,
               hashed_by_caller: bool = False) -> BlobWriter:
        """A context manager that stores what is written to it, atomically and verified.

        ``expected`` (and ``size``) are checked on exit; a mismatch raises
        ``DigestMismatchError`` and stores nothing. See ``BlobWriter`` for ``hashed_by_caller``.
        """
        return BlobWriter(self, expected, size, hashed_by_caller)

    def put_stream(self, stream: BinaryIO, expected: Digest | None = None, *,
                   size: int | None = None) -> tuple[Digest, int]:
        """Store everything left in ``stream``; returns its digest and size."""
        if expected is not None and self.has(expected):
            return expected, self.size(expected)
        with self.writer(expected, size=size) as w:
            while chunk := stream.read(CHUNK):
                w.write(chunk)
        assert w.digest is not None and w.size is not None
        return w.digest, w.size

    def put_bytes(self, data: bytes, expected: Digest | None = None) -> Digest:
        digest = Digest.from_bytes(data, expected.algorithm if expected else "sha256")
        if expected is not None:
            verify(expected, digest, "blob")
        if self.exists(digest):  # a rebuild stores the same config and manifest: no fsync
            self.touch(digest)
            return digest
        with self.writer(expected, size=len(data)) as w:
            w.write(data)
        assert w.digest is not None
        return w.digest

    def put_file(self, path: Path, expected: Digest | None = None) -> tuple[Digest, int]:
        with open(path, "rb") as f:
            return self.put_stream(f, expected)

    def touch(self, digest: Digest) -> None:
        """Mark a blob as recently used, so a concurrent ``gc`` grace period protects it."""
        try:
            os.utime(self.path(digest))
        except OSError:
            pass  # gone, or a read-only store: nothing to protect then

    def check(self, digest: Digest) -> None:
        """Re-hash a stored blob; raises DigestMismatchError when the disk changed under it."""
        with self.open(digest) as f:
            actual, _ = Digest.from_stream(f, digest.algorithm)
        verify(digest, actual, f"stored blob {digest.short}")

    def digests(self) -> Iterator[Digest]:
        """Every stored blob's digest (files with names that are not digests are ignored)."""
        for alg_dir in sorted(p for p in self.blobs_dir.iterdir() if p.is_dir()):
            for blob in sorted(alg_dir.iterdir()):
                try:
                    yield Digest(alg_dir.name, blob.name)
                except ValueError:
                    continue

    def delete(self, digest: Digest) -> int:
        """Remove a blob; returns the bytes freed (0 when it was already gone)."""
        path = self.path(digest)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size

    def clean_tmp(self, older_than: float) -> int:
        """Remove temporary files left by killed writers, older than ``older_than`` seconds."""
        freed = 0
        cutoff = time.time() - older_than
        for entry in self.tmp_dir.iterdir():
            try:
                st = entry.lstat()
                if st.st_mtime > cutoff:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    rmtree(entry)
                else:
                    entry.unlink()
                freed += st.st_size
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
        return freed
