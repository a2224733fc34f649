"""Read-only Image and Layer values, backed by wherever their blobs live.

As in go-containerregistry, an image is a handful of accessors (manifest, config, layers,
digest) and a layer is (digest, diff id, size, media type, a stream of its bytes). A layer
carries its own BlobSource, so an image may mix layers from the store, a layout and memory;
changes are free functions in mutate.py that return new values. An image read from somewhere
keeps the exact manifest bytes it was read from, so its digest never changes by re-encoding;
an image built from a config and layers computes its manifest lazily, on first use.
"""

from __future__ import annotations

import gzip
import io
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from cloche.compression import open_decompressed
from cloche.oci import mediatypes as mt
from cloche.oci._frozen import FrozenMap
from cloche.oci._streams import VerifyingReader
from cloche.oci.config import ImageConfig
from cloche.oci.descriptor import Descriptor
from cloche.oci.digest import Digest
from cloche.oci.errors import BlobNotFoundError, ImageFormatError
from cloche.oci.manifest import Manifest, parse
from cloche.oci.platform import Platform


@runtime_checkable
class BlobSource(Protocol):
    """Where blobs come from: a store, a layout's blobs dir, an archive, memory."""

    def open(self, digest: Digest) -> BinaryIO: ...

    def size(self, digest: Digest) -> int: ...


class MemoryBlobSource:
    """Blobs held in memory: for tests and small things (configs, manifests)."""

    def __init__(self, blobs: Mapping[Digest, bytes] | None = None) -> None:
        self._blobs: dict[Digest, bytes] = dict(blobs or {})

    def put(self, data: bytes) -> Digest:
        digest = Digest.from_bytes(data)
        self._blobs[digest] = bytes(data)
        return digest

    def has(self, digest: Digest) -> bool:
        return digest in self._blobs

    def open(self, digest: Digest) -> BinaryIO:
        try:
            return io.BytesIO(self._blobs[digest])
        except KeyError:
            raise BlobNotFoundError(f"blob {digest} not found", digest=digest,
                                    source="memory") from None

    def size(self, digest: Digest) -> int:
        try:
            return len(self._blobs[digest])
        except KeyError:
            raise BlobNotFoundError(f"blob {digest} not found", digest=digest,
                                    source="memory") from None


class DirBlobSource:
    """Blobs as files ``ROOT/ALGORITHM/HEX`` (an OCI layout's ``blobs`` directory). The path
    is built from a validated Digest, so it cannot leave ROOT."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, digest: Digest) -> Path:
        return self.root / digest.algorithm / digest.hex

    def has(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def open(self, digest: Digest) -> BinaryIO:
        try:  # O_NOFOLLOW: a blob planted as a symlink must not make us read outside ROOT
            fd = os.open(self.path(digest), os.O_RDONLY | os.O_NOFOLLOW)
            return os.fdopen(fd, "rb")
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob {digest} not found", digest=digest,
                                    source=str(self.root)) from None

    def size(self, digest: Digest) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob {digest} not found", digest=digest,
                                    source=str(self.root)) from None


def read_blob(source: BlobSource, desc: Descriptor, what: str = "blob",
              limit: int = 64 << 20) -> bytes:
    """A small blob (config, manifest) read whole and verified against its descriptor."""
    if desc.size > limit:
        raise ImageFormatError(f"{what} {desc.digest} is {desc.size} bytes, more than {limit}")
    with VerifyingReader(source.open(desc.digest), desc.digest, desc.size, what) as reader:
        return reader.read()


@dataclass(frozen=True)
class Layer:
    """One layer: ``digest``/``size`` of the blob as stored (maybe compressed), ``diff_id``
    of its uncompressed tar."""

    digest: Digest
    diff_id: Digest
    size: int
    media_type: str
    source: BlobSource = field(compare=False, repr=False)
    annotations: Mapping[str, str] = field(default_factory=FrozenMap)
    urls: tuple[str, ...] = ()

    def open(self, *, verify: bool = True) -> BinaryIO:
        """The blob's bytes as stored; verified against digest and size at end of stream."""
        stream = self.source.open(self.digest)
        if not verify:
            return stream
        return io.BufferedReader(VerifyingReader(stream, self.digest, self.size, "layer"),
                                 1 << 16)

    def open_uncompressed(self, *, verify: bool = True) -> BinaryIO:
        """The layer's tar stream; with ``verify`` its diff id is checked at end of stream."""
        tar = open_decompressed(self.open(verify=verify), closefd=True)
        if not verify or self.digest == self.diff_id:  # already checked as the blob's digest
            return tar
        return io.BufferedReader(VerifyingReader(tar, self.diff_id, None, "layer diff id"),
                                 1 << 16)

    @property
    def compression(self) -> str:
        return mt.layer_compression(self.media_type)

    @property
    def shown_size(self) -> int:
        """The size progress reports show: the blob's (see ``LazyLayer`` for one not yet
        written)."""
        return self.size

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size,
                          annotations=self.annotations, urls=self.urls)

    @classmethod
    def from_tar_bytes(cls, tar: bytes, compression: str = "gzip",
                       source: MemoryBlobSource | None = None) -> Layer:
        """A layer held in memory, made from an uncompressed tar (tests, tiny layers);
        gzip output is deterministic (mtime 0)."""
        if compression == "gzip":
            blob = gzip.compress(tar, mtime=0)
        elif compression == "zstd":
            import zstandard
            blob = zstandard.ZstdCompressor().compress(tar)
        else:
            blob = tar
        source = source or MemoryBlobSource()
        digest = source.put(blob)
        return cls(digest, Digest.from_bytes(tar), len(blob), mt.layer_type(compression), source)


class LazyLayer(Layer):
    """A layer whose blob is written only when something asks for its digest or bytes.

    A build step's change is known as a directory (its snapshot) and a diff id (the sha256 of
    its uncompressed tar, cheap to compute); compressing it into a blob is the expensive part,
    and most layers of a multi-stage build are never shipped. ``produce`` writes the blob and
    returns (digest, size, media type); it runs at most once (under a lock, so concurrent
    readers wait for the one writer) and its result is kept. ``shown_size`` reports the
    uncompressed size until then, so progress reporting never forces the blob.
    """

    tar_size: int
    _produce: Callable[[], tuple[Digest, int, str]]
    _lock: threading.Lock
    _blob: tuple[Digest, int, str] | None
    _callbacks: list[Callable[[Layer], None]]

    def __init__(self, diff_id: Digest, tar_size: int, source: BlobSource,
                 produce: Callable[[], tuple[Digest, int, str]]) -> None:
        object.__setattr__(self, "diff_id", diff_id)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "annotations", FrozenMap())
        object.__setattr__(self, "urls", ())
        object.__setattr__(self, "tar_size", tar_size)
        object.__setattr__(self, "_produce", produce)
        object.__setattr__(self, "_lock", threading.Lock())
        object.__setattr__(self, "_blob", None)
        object.__setattr__(self, "_callbacks", [])

    def _resolved(self) -> tuple[Digest, int, str]:
        blob: tuple[Digest, int, str] | None = self._blob
        if blob is None:
            with self._lock:
                blob = self._blob
                if blob is None:
                    blob = self._produce()
                    object.__setattr__(self, "_blob", blob)
                    callbacks, self._callbacks[:] = list(self._callbacks), []
                    for callback in callbacks:
                        callback(self)
        return blob

    def when_written(self, callback: Callable[[Layer], None]) -> None:
        """Call ``callback(self)`` once the blob is written (now, when it already is)."""
        with self._lock:
            if self._blob is None:
                self._callbacks.append(callback)
                return
        callback(self)

    @property
    def materialized(self) -> bool:
        """Whether the blob has been written (by this value)."""
        return self._blob is not None

    @property
    def digest(self) -> Digest:
        return self._resolved()[0]

    @property
    def size(self) -> int:
        return self._resolved()[1]

    @property
    def media_type(self) -> str:
        return self._resolved()[2]

    @property
    def shown_size(self) -> int:
        return self._blob[1] if self._blob is not None else self.tar_size

    def __repr__(self) -> str:
        state = f"digest={self._blob[0]}" if self._blob is not None else "pending"
        return f"LazyLayer(diff_id={self.diff_id}, {state})"

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, Layer) and super().__eq__(other))

    __hash__ = Layer.__hash__


@dataclass(frozen=True)
class Image:
    """An image value. ``raw_manifest`` holds the exact bytes it was read from, or None when
    the manifest is to be computed from ``config_bytes`` and ``layers``."""

    config_bytes: bytes
    layers: tuple[Layer, ...] = ()
    media_type: str = mt.OCI_MANIFEST
    annotations: Mapping[str, str] = field(default_factory=FrozenMap)
    raw_manifest: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not isinstance(self.annotations, FrozenMap):
            object.__setattr__(self, "annotations", FrozenMap(self.annotations or {}))
        if self.media_type not in mt.MANIFEST_TYPES:
            raise ImageFormatError(f"an image's media type must be a manifest type, "
                                   f"not {self.media_type!r}")

    @classmethod
    def from_config(cls, config: ImageConfig, layers: Iterable[Layer] = (), *,
                    media_type: str = mt.OCI_MANIFEST,
                    annotations: Mapping[str, str] | None = None) -> Image:
        """An image from a config value and layers whose diff ids the config must list."""
        layers = tuple(layers)
        if tuple(layer.diff_id for layer in layers) != config.diff_ids:
            raise ImageFormatError("the config's rootfs diff_ids do not match the layers")
        return cls(config.to_json(), layers, media_type, FrozenMap(annotations or {}))

    @classmethod
    def from_manifest(cls, manifest_bytes: bytes, source: BlobSource, *,
                      media_type: str | None = None, name: str | None = None) -> Image:
        """The image a manifest describes, its config read (and verified) from ``source``,
        its layers left in ``source``. ``name`` is used in error messages."""
        manifest = parse(manifest_bytes, media_type=media_type, source=name)
        if not isinstance(manifest, Manifest):
            raise ImageFormatError("this is an index, not an image manifest", source=name)
        config_bytes = read_blob(source, manifest.config, "config")
        config = ImageConfig.from_json(config_bytes, source=name)
        if len(config.diff_ids) != len(manifest.layers):
            raise ImageFormatError(f"the manifest has {len(manifest.layers)} layers but the "
                                   f"config lists {len(config.diff_ids)} diff ids", source=name)
        layers = tuple(Layer(d.digest, diff_id, d.size, d.media_type, source, d.annotations,
                             d.urls) for d, diff_id in zip(manifest.layers, config.diff_ids))
        return cls(config_bytes, layers, manifest.media_type, manifest.annotations,
                   bytes(manifest_bytes))

    @cached_property
    def config(self) -> ImageConfig:
        return ImageConfig.from_json(self.config_bytes)

    @cached_property
    def config_digest(self) -> Digest:
        return Digest.from_bytes(self.config_bytes)

    @property
    def config_descriptor(self) -> Descriptor:
        kind = mt.DOCKER_CONFIG if self.media_type == mt.DOCKER_MANIFEST else mt.OCI_CONFIG
        if self.raw_manifest is not None:
            kind = self.manifest.config.media_type
        return Descriptor(kind, self.config_digest, len(self.config_bytes))

    @cached_property
    def manifest(self) -> Manifest:
        if self.raw_manifest is not None:
            value = parse(self.raw_manifest)
            assert isinstance(value, Manifest)
            return value
        docker = self.media_type == mt.DOCKER_MANIFEST
        conv = mt.to_docker if docker else mt.to_oci
        return Manifest(config=self.config_descriptor,
                        layers=tuple(layer.descriptor.with_media_type(conv(layer.media_type))
                                     for layer in self.layers),
                        media_type=self.media_type,
                        annotations=FrozenMap() if docker else self.annotations)

    @cached_property
    def manifest_bytes(self) -> bytes:
        if self.raw_manifest is not None:
            return self.raw_manifest
        return self.manifest.to_json(docker=self.media_type == mt.DOCKER_MANIFEST)

    @cached_property
    def digest(self) -> Digest:
        return Digest.from_bytes(self.manifest_bytes)

    @property
    def platform(self) -> Platform:
        return self.config.platform

    def descriptor(self, **annotations: str) -> Descriptor:
        """The manifest's descriptor, with the config's platform, as an index lists it."""
        return Descriptor(self.media_type, self.digest, len(self.manifest_bytes),
                          annotations=FrozenMap(annotations), platform=self.platform)

    @property
    def size(self) -> int:
        """Bytes of manifest, config and layer blobs (what a registry stores)."""
        return len(self.manifest_bytes) + len(self.config_bytes) + sum(x.size for x in self.layers)
