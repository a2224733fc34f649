"""Compressed twins of plain-tar layers, for pushes and archives.

A build keeps its layers in the store as plain tars (as the Docker engine keeps its layers):
compressing is the costliest part of a big layer, and only what leaves the machine needs it.
``for_distribution`` gives the image with every plain layer replaced by a compressed blob,
written once per layer and compression and remembered under ``<root>/compressed/`` (a small
record: the blob's digest and size), as ``docker push`` compresses what the engine stores.
The config, hence the image ID, is the same; the manifest (the digest a registry reports)
is not, exactly as with Docker.

A record whose blob is gone (``gc``) is a miss: the layer is compressed again. Compression is
deterministic (ISA-L's gzip in fixed blocks, no timestamps), so the twin's digest does not
depend on when or where it was made.
"""

from __future__ import annotations

import json
from pathlib import Path

from cloche.compression import Compression
from cloche.layers.compress import open_compressed_writer
from cloche.oci import mediatypes as mt
from cloche.oci.digest import Digest
from cloche.oci.image import Image, Layer
from cloche.oci.mutate import replace_layers
from cloche.store.index import atomic_write
from cloche.store.store import Store

CHUNK = 1 << 20


def for_distribution(store: Store, image: Image,
                     compression: Compression = Compression.GZIP) -> Image:
    """``image`` with its plain-tar layers compressed (unchanged when it has none)."""
    if not any(mt.layer_compression(layer.media_type) == "none" for layer in image.layers):
        return image
    docker = mt.is_docker(image.media_type)
    layers = [_compressed(store, layer, compression, docker)
              if mt.layer_compression(layer.media_type) == "none" else layer
              for layer in image.layers]
    return replace_layers(image, layers)


def _record(store: Store, digest: Digest, compression: Compression) -> Path:
    return store.root / "compressed" / compression.value / f"{digest.algorithm}-{digest.hex}.json"


def _compressed(store: Store, layer: Layer, compression: Compression, docker: bool) -> Layer:
    media_type = mt.layer_type(compression.value, docker=docker)
    record = _record(store, layer.digest, compression)
    try:
        doc = json.loads(record.read_bytes())
        digest, size = Digest.parse(doc["digest"]), int(doc["size"])
        if store.blobs.exists(digest) and store.blobs.size(digest) == size:
            store.blobs.touch(digest)
            return Layer(digest, layer.diff_id, size, media_type, store.blobs, layer.annotations)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no record, or a corrupt one: compress again
    with layer.open() as src, store.blobs.writer() as sink:
        out = open_compressed_writer(sink, compression)  # type: ignore[arg-type]
        while chunk := src.read(CHUNK):
            out.write(chunk)
        out.close()
    assert sink.digest is not None and sink.size is not None
    record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(record, json.dumps({"digest": str(sink.digest), "size": sink.size}).encode())
    return Layer(sink.digest, layer.diff_id, sink.size, media_type, store.blobs, layer.annotations)


def compressed_layer(store: Store, layer: Layer, compression: Compression) -> Layer:
    """The OCI ``compression`` twin of one plain-tar layer (written once, remembered)."""
    return _compressed(store, layer, compression, False)


def remember_twin(store: Store, plain: Digest, compression: Compression, digest: Digest,
                  size: int) -> None:
    """Record that the stored blob ``digest`` is the ``compression`` twin of ``plain`` (a
    layer fetched compressed and unpacked into the store: a push sends it as it came)."""
    record = _record(store, plain, compression)
    record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(record, json.dumps({"digest": str(digest), "size": size}).encode())


def forget_missing(store: Store) -> int:
    """Remove the records whose compressed blob is gone (after ``gc``); returns how many."""
    removed = 0
    for record in sorted((store.root / "compressed").glob("*/*.json")):
        try:
            gone = not store.blobs.exists(Digest.parse(json.loads(record.read_bytes())["digest"]))
        except (OSError, ValueError, KeyError, TypeError):
            gone = True  # unreadable: useless
        if gone:
            record.unlink(missing_ok=True)
            removed += 1
    return removed


__all__ = ["compressed_layer", "for_distribution", "forget_missing", "remember_twin"]
