"""Compressed twins of plain-tar layers, for pushes and archives.

A build keeps its layers in the store as plain tars (as the Docker engine keeps its layers):
compressing is the costliest part of a big layer, and only what leaves the machine needs it.
``for_distribution`` gives the image with every plain layer replaced by a compressed blob,
written once per layer and compression and remembered under ``<root>/compressed/`` (a small
record: the blob's digest and size), as ``docker push`` compresses what the engine stores.
The config, hence the image ID, is the same; the manifest (the digest a registry reports)
is not, exactly as with Docker.

``for_output`` is the same for an output's ``compression=``, ``compression-level=`` and
``force-compression=`` (``OutputCompression``), as BuildKit's exporters apply them: the
layers the build made are written in the asked compression; the base image's keep theirs
unless forced (a plain one takes a twin it already has, else the asked compression).
Twins at a level other than the writer's default are remembered apart (``gzip-1/``).

A record whose blob is gone (``gc``) is a miss: the layer is compressed again. Compression is
deterministic (ISA-L's gzip in fixed blocks, no timestamps), so the twin's digest does not
depend on when or where it was made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cloche.compression import Compression
from cloche.layers.compress import DEFAULT_GZIP_LEVEL, DEFAULT_ZSTD_LEVEL, open_compressed_writer
from cloche.oci import mediatypes as mt
from cloche.oci.digest import Digest
from cloche.oci.image import Image, Layer
from cloche.oci.mutate import replace_layers, with_media_type
from cloche.store.index import atomic_write
from cloche.store.store import Store

CHUNK = 1 << 20
_DEFAULT_LEVEL = {Compression.GZIP: DEFAULT_GZIP_LEVEL, Compression.ZSTD: DEFAULT_ZSTD_LEVEL}


@dataclass(frozen=True)
class OutputCompression:
    """How an output writes layers: the build's in ``compression`` at ``level`` (the layer
    writer's level, ``cloche.layers.compress``; None: its default), the base image's as they
    are unless ``force``."""

    compression: Compression = Compression.GZIP
    level: int | None = None
    force: bool = False


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


def for_output(store: Store, image: Image, how: OutputCompression,
               base_layers: int = 0) -> Image:
    """``image`` as an output with ``how`` writes it: the layers after the first
    ``base_layers`` (the base image's) in ``how.compression``; the base's kept as they are
    (a plain one: a twin the store has, else compressed as asked) unless ``how.force``.
    Diff ids and config are unchanged; zstd layers take OCI media types (Docker's schema 2
    has none for them that Docker reads). ``image`` itself when nothing changes."""
    want = how.compression
    docker = mt.is_docker(image.media_type) and want is not Compression.ZSTD
    layers = []
    for i, layer in enumerate(image.layers):
        kind = mt.layer_compression(layer.media_type)
        if how.force or i >= base_layers:
            layers.append(_converted(store, layer, want, how.level, docker))
        elif kind == "none":
            layers.append(_twin(store, layer, want, how.level, docker))
        else:
            layers.append(layer)
    if all(a.digest == b.digest and a.media_type == b.media_type
           for a, b in zip(layers, image.layers)):
        return image
    out = replace_layers(image, layers)
    if mt.is_docker(image.media_type) and not docker:
        out = with_media_type(out, docker=False)
    return out


def _level(compression: Compression, level: int | None) -> int | None:
    """None for the writer's default level (its twins are recorded under the plain name)."""
    return None if level == _DEFAULT_LEVEL.get(compression) else level


def _record(store: Store, digest: Digest, compression: Compression,
            level: int | None = None) -> Path:
    folder = compression.value if _level(compression, level) is None \
        else f"{compression.value}-{level}"
    return store.root / "compressed" / folder / f"{digest.algorithm}-{digest.hex}.json"


def _recorded(store: Store, layer: Layer, compression: Compression, level: int | None,
              docker: bool) -> Layer | None:
    """The twin of ``layer`` (by its diff id) the store remembers, if its blob is there."""
    try:
        doc = json.loads(_record(store, layer.diff_id, compression, level).read_bytes())
        digest, size = Digest.parse(doc["digest"]), int(doc["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no record, or a corrupt one
    if not store.blobs.exists(digest) or store.blobs.size(digest) != size:
        return None
    store.blobs.touch(digest)
    return Layer(digest, layer.diff_id, size, mt.layer_type(compression.value, docker=docker),
                 store.blobs, layer.annotations)


def _compressed(store: Store, layer: Layer, compression: Compression, docker: bool,
                level: int | None = None) -> Layer:
    """``layer`` (plain or compressed otherwise) as a ``compression`` blob at ``level``,
    written once and remembered under the layer's diff id."""
    known = _recorded(store, layer, compression, level, docker)
    if known is not None:
        return known
    # the tar read back is checked against the diff id: a base layer whose blob does not
    # hold what its config says is an error, never recompressed under the config's name
    with layer.open_uncompressed() as src, store.blobs.writer() as sink:
        out = open_compressed_writer(sink, compression,  # type: ignore[arg-type]
                                     level=_level(compression, level))
        while chunk := src.read(CHUNK):
            out.write(chunk)
        out.close()
    assert sink.digest is not None and sink.size is not None
    record = _record(store, layer.diff_id, compression, level)
    record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(record, json.dumps({"digest": str(sink.digest), "size": sink.size}).encode())
    return Layer(sink.digest, layer.diff_id, sink.size,
                 mt.layer_type(compression.value, docker=docker), store.blobs,
                 layer.annotations)


def _plain(store: Store, layer: Layer, docker: bool) -> Layer:
    """``layer`` as a plain tar blob (its digest is its diff id), stored once."""
    media_type = mt.layer_type("none", docker=docker)
    if not store.blobs.exists(layer.diff_id):
        with layer.open_uncompressed() as src:
            store.blobs.put_stream(src, layer.diff_id)
    return Layer(layer.diff_id, layer.diff_id, store.blobs.size(layer.diff_id), media_type,
                 store.blobs, layer.annotations)


def _converted(store: Store, layer: Layer, want: Compression, level: int | None,
               docker: bool) -> Layer:
    """``layer`` in ``want``: kept when it is in that compression already (as BuildKit
    reuses a blob of the asked type, whatever its level), else written so."""
    if mt.layer_compression(layer.media_type) == want.value:
        return layer
    if want is Compression.NONE:
        return _plain(store, layer, docker)
    return _compressed(store, layer, want, docker, level)


def _twin(store: Store, layer: Layer, want: Compression, level: int | None,
          docker: bool) -> Layer:
    """A plain base layer kept in the compression it has a twin in (the asked one first:
    how it came from a registry or cache), else written as asked."""
    tried = [(want, level), (want, None), (Compression.GZIP, None), (Compression.ZSTD, None)]
    for compression, lvl in tried:
        if compression is not Compression.NONE:
            known = _recorded(store, layer, compression, lvl, docker)
            if known is not None:
                return known
    if want is Compression.NONE:
        return layer
    return _compressed(store, layer, want, docker, level)


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


__all__ = ["OutputCompression", "compressed_layer", "for_distribution", "for_output",
           "forget_missing", "remember_twin"]
