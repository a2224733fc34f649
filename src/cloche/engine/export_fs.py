"""The ``local`` and ``tar`` outputs: the image's final root filesystem, as a folder or a tar.

Both flatten the image's layers (whiteouts applied) into a scratch folder of the store's
builds area, held with a lock as a build's workspace is, so that ``cloche prune`` removes it
when the process was killed (a scratch folder in the store root was seen by nothing). Then:

- ``local`` copies that final tree into the caller's folder without ever deleting anything
  there: BuildKit's local exporter receives the tree with fsutil's ``Merge: true``, which
  writes the image's files (replacing a file of the same name) and leaves the others alone.
  Replaying the layers over the folder instead applied their whiteouts to the caller's files
  (a ``.wh..wh..opq`` at the top emptied the whole folder).
- ``tar`` writes the tree as one tar through ``AtomicOutput``: the file appears whole under
  its name, or not at all.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from cloche.compression import Compression
from cloche.fs.extract import ExtractError, Extractor
from cloche.fs.outfile import AtomicOutput, OutputFileError
from cloche.fs.rmtree import rmtree
from cloche.fs.tarentry import TarEntry
from cloche.oci.image import Image
from cloche.store import Store

__all__ = ["export_local", "export_tar", "export_scratch"]


@contextmanager
def export_scratch(store: Store, prefix: str) -> Iterator[Path]:
    """A private folder in the store's builds area, removed at the end; if the process dies
    first, its free lock file tells ``prune`` (``_remove_stale_builds``) to remove it."""
    folder = store.builds_dir / f"{prefix}-{uuid.uuid4().hex[:12]}"
    lock = folder.with_name(folder.name + ".lock")
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        folder.mkdir(mode=0o700)
        try:
            yield folder
        finally:
            rmtree(folder, ignore_errors=True)
            lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _flatten(image: Image, dest: Path) -> None:
    from cloche.layers.apply import flatten

    streams = [layer.open() for layer in image.layers]
    try:
        flatten(streams, dest)
    finally:
        for s in streams:
            s.close()


def _tree_entries(root: Path, epoch: int | None = None
                  ) -> Iterator[tuple[TarEntry, BinaryIO | None]]:
    """The entries of a tree with their contents opened one at a time (no link followed);
    with ``epoch`` (SOURCE_DATE_EPOCH) every mtime is it, as BuildKit's local exporter."""
    from cloche.layers.tree import TreeScanner

    for entry, source in TreeScanner(root, source_date_epoch=epoch, clamp=False):
        if source is None:
            yield entry, None
            continue
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as content:
            yield entry, content


def export_local(image: Image, dest: Path, store: Store, *, epoch: int | None = None) -> None:
    """Write the image's final tree into ``dest`` (made when missing), deleting nothing.
    A build without root (cloche.rootless) writes the files as the user's own (uid 0 of its
    namespace), as rootless BuildKit's client does: subordinate ids would leave the user
    files it cannot remove."""
    from cloche.rootless.identity import is_rootless

    owner = (0, 0) if is_rootless() else None
    with export_scratch(store, "export") as scratch:
        tree = scratch / "rootfs"
        _flatten(image, tree)
        try:
            # a user who is not root (chroot mode) writes its own files: nothing recorded
            extractor = Extractor(dest, whiteouts=False, root_metadata=False, owner=owner,
                                  same_owner=os.geteuid() == 0)
            extractor.extract(_tree_entries(tree, epoch))
        except OSError as err:
            raise OutputFileError("the local output folder", dest, err, "--output") from err
        except ExtractError as err:
            raise OutputFileError("the local output folder", dest, err.message,
                                  "--output") from err


def export_tar(image: Image, dest: str, store: Store, *, epoch: int | None = None) -> None:
    """Write the image's final tree as an uncompressed tar at ``dest`` ("-": stdout); with
    ``epoch`` (SOURCE_DATE_EPOCH) every mtime is it, as BuildKit's tar exporter."""
    import sys

    from cloche.layers.tree import write_tree

    with export_scratch(store, "export") as scratch:
        tree = scratch / "rootfs"
        _flatten(image, tree)
        if dest == "-":
            write_tree(tree, sys.stdout.buffer, Compression.NONE, source_date_epoch=epoch,
                       clamp=False)
            return
        try:
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputFileError("the tar output", dest, err, "--output") from err
        with AtomicOutput(dest, what="the tar output", flag="--output") as out:
            write_tree(tree, out, Compression.NONE, source_date_epoch=epoch, clamp=False)
