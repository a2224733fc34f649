"""``docker import`` for cloche: a root filesystem (a directory, or a tar plain or compressed)
becomes a one-layer image in the store.

This is how tests and the demo make base images without Docker Hub (a debootstrap folder, the
busybox-static fixture). A directory is written by the deterministic layer writer (sorted
entries, normalised headers). A tar is not stored as given: it is read entry by entry (every
name cleaned, so nothing that climbs out with '..' gets in) and written again, streamed, in its
own entry order (as docker import keeps it), so plain, compressed and piped copies of one tar
give one layer.
The config follows docker import's: the platform (host unless given), ``created``, a history
entry whose comment says where the layer came from, and the ``--change`` instructions, applied
by the build's own front end and config handlers (``cloche.ops.changes``).
This is an operation of the face, not of the store: it combines the store with the layer
writer and the Dockerfile front end, which the store may not import.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from cloche.compression import Compression
from cloche.errors import LayerError, UnsafePathError
from cloche.layers.reader import LayerReader
from cloche.layers.tarwriter import LayerBlob, TarWriter
from cloche.layers.tree import write_tree
from cloche.oci.config import History, ImageConfig
from cloche.oci.descriptor import Descriptor
from cloche.oci.image import Image, Layer
from cloche.oci.platform import Platform
from cloche.ops.changes import apply_changes
from cloche.store.store import Store


class ImportSourceError(LayerError):
    """The file or directory given to import cannot be read as a root filesystem."""


class _Sink(io.RawIOBase):
    """A write-only file object over a blob writer (what the layer writer expects)."""

    def __init__(self, writer: object) -> None:
        self._writer = writer

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._writer.write(bytes(data))  # type: ignore[attr-defined]
        return len(data)


def import_rootfs(store: Store, source: Path | BinaryIO, *, names: Iterable[str] = (),
                  changes: Iterable[str] = (), platform: Platform | None = None,
                  message: str | None = None, source_label: str | None = None,
                  compression: Compression = Compression.GZIP) -> tuple[Descriptor, Image]:
    """Store ``source`` (a directory path, a tar path, or a binary stream of a tar) as an image.

    Returns the stored descriptor and the image value. A bad change fails before any work.
    """
    label = source_label or (str(source) if isinstance(source, Path) else "-")
    runtime = apply_changes(ImageConfig(), changes)  # an import starts from an empty config
    with store.lease():
        return _import(store, source, label, names, runtime, platform, message, compression)


def _import(store: Store, source: Path | BinaryIO, label: str, names: Iterable[str],
            runtime: ImageConfig, platform: Platform | None, message: str | None,
            compression: Compression) -> tuple[Descriptor, Image]:
    with store.blobs.writer() as blob:
        sink = _Sink(blob)
        if isinstance(source, Path) and source.is_dir():
            result = write_tree(source, sink, compression)
        elif isinstance(source, Path):
            try:
                stream = open(source, "rb")
            except OSError as e:
                raise ImportSourceError(f"cannot read {source}: {e.strerror or e}") from e
            with stream:
                result = _retar(stream, sink, compression, label)
        else:
            result = _retar(source, sink, compression, label)
    assert blob.digest is not None and blob.digest == result.digest, "layer digest disagreement"
    plat = platform or Platform.host()
    moment = datetime.now(UTC)
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    if epoch.isdigit():  # reproducible imports: the same files give the same image digest
        moment = datetime.fromtimestamp(int(epoch), UTC)
    created = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    comment = message if message is not None else f"Imported from {label}"
    config = runtime.replace(architecture=plat.architecture, os=plat.os, variant=plat.variant,
                             created=created, diff_ids=(result.diff_id,),
                             history=(History(created=created, comment=comment),))
    layer = Layer(result.digest, result.diff_id, result.size, result.media_type, store.blobs)
    image = Image.from_config(config, [layer])
    return store.put_image(image, list(names)), image


def _retar(stream: BinaryIO, sink: io.RawIOBase, compression: Compression,
           label: str) -> LayerBlob:
    try:
        with TarWriter(sink, compression) as writer:
            for entry, content in LayerReader(stream):
                if entry.path in ("", "."):
                    continue  # the root itself: docker import ignores it too
                writer.add(entry, content)
    except (LayerError, UnsafePathError) as e:
        raise ImportSourceError(f"{label}: {e.message}") from e
    assert writer.result is not None
    return writer.result
