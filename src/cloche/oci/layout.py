"""OCI image layout directories: ``oci-layout``, ``index.json`` and ``blobs/ALG/HEX``.

Several images live in one layout, each named by the ``org.opencontainers.image.ref.name``
annotation of its index.json entry (``oci:DIR:NAME`` for skopeo, ``DIR:NAME`` for umoci).
Blobs are written under a temporary name, verified, then renamed, so an interrupted write
never leaves a blob whose bytes do not match its name; index.json is replaced atomically.
Resolving a name to an image is shared with OCI archives (``resolve_image``).
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from cloche.oci import _json
from cloche.oci import mediatypes as mt
from cloche.oci._streams import VerifyingReader
from cloche.oci.descriptor import ANNOTATION_REF_NAME, Descriptor
from cloche.oci.digest import Digest
from cloche.oci.errors import ImageFormatError, RefNotFoundError
from cloche.oci.image import BlobSource, DirBlobSource, Image, read_blob
from cloche.oci.manifest import Index
from cloche.oci.platform import Platform

# The OCI image layout spec's grammar for org.opencontainers.image.ref.name.
_REF_NAME = re.compile(r"^[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
                       r"(?:/[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*)*$")

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"


#: Wraps a blob's stream (digest, size, stream) as a writer copies it: how the engine counts
#: an export's bytes without the OCI core knowing of progress events.
BlobWatch = Callable[[Digest, int, BinaryIO], BinaryIO]


def layout_marker() -> bytes:
    return _json.dumps({"imageLayoutVersion": mt.OCI_LAYOUT_VERSION})


def image_blobs(image: Image) -> Iterable[tuple[Digest, int, Callable[[], BinaryIO]]]:
    """Every blob an image needs (layers, config, manifest) with an opener; the manifest
    comes last, so a reader that sees it can find everything it names."""
    for layer in image.layers:
        yield layer.digest, layer.size, layer.open
    yield image.config_digest, len(image.config_bytes), lambda: _bytes_io(image.config_bytes)
    yield image.digest, len(image.manifest_bytes), lambda: _bytes_io(image.manifest_bytes)


def _bytes_io(data: bytes) -> BinaryIO:
    return io.BytesIO(data)


def resolve_image(index: Index, blobs: BlobSource, *, name: str | None = None,
                  platform: Platform | None = None, source: str) -> Image:
    """The image called ``name`` in a layout's index (the only one when ``name`` is None);
    an entry that is itself an index is narrowed to ``platform`` (the host's by default)."""
    entries = list(index.manifests)
    names = tuple(d.ref_name for d in entries if d.ref_name)
    if name is not None:
        entries = [d for d in entries if d.ref_name == name]
        if not entries:
            raise RefNotFoundError(f"{source}: no image named {name!r}", name=name,
                                   available=names)
    elif len(entries) != 1:
        raise RefNotFoundError(f"{source}: holds {len(entries)} images, name one",
                               name="", available=names)
    if platform is not None and len(entries) > 1:
        entries = [index.with_manifests(entries).select(platform)]
    desc = entries[-1]
    for _ in range(8):  # nested indexes, bounded
        if mt.is_manifest(desc.media_type):
            data = read_blob(blobs, desc, "manifest")
            return Image.from_manifest(data, blobs, media_type=desc.media_type, name=source)
        if mt.is_index(desc.media_type):
            nested = Index.from_json(read_blob(blobs, desc, "index"), source=source)
            desc = nested.select(platform or Platform.host())
            continue
        raise ImageFormatError(f"entry {desc.digest} has unsupported media type "
                               f"{desc.media_type!r}", source=source)
    raise ImageFormatError("indexes nested too deeply", source=source)


class Layout:
    """An OCI image layout directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.blobs = DirBlobSource(self.root / "blobs")

    @classmethod
    def create(cls, root: str | Path) -> Layout:
        """Open the layout at ``root``, making an empty one when nothing is there."""
        layout = cls(root)
        layout.root.mkdir(parents=True, exist_ok=True)
        if not (layout.root / LAYOUT_FILE).exists():
            layout._write_atomic(LAYOUT_FILE, layout_marker())
        if not (layout.root / INDEX_FILE).exists():
            layout._write_atomic(INDEX_FILE, Index().to_json())
        return layout

    @classmethod
    def open(cls, root: str | Path) -> Layout:
        """An existing layout; ImageFormatError when ``root`` is not one."""
        layout = cls(root)
        marker = layout.root / LAYOUT_FILE
        if not marker.is_file():
            raise ImageFormatError("not an OCI image layout (no oci-layout file)",
                                   source=str(root))
        doc = _json.loads(marker.read_bytes(), what="oci-layout", source=str(marker))
        version = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            raise ImageFormatError(f"unsupported imageLayoutVersion {version!r}",
                                   source=str(marker))
        return layout

    # --- reading -----------------------------------------------------------------------
    def index(self) -> Index:
        path = self.root / INDEX_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageFormatError("not an OCI image layout (no index.json)",
                                   source=str(self.root)) from None
        return Index.from_json(data, media_type=mt.OCI_INDEX, source=str(path))

    def names(self) -> tuple[str, ...]:
        return tuple(d.ref_name for d in self.index().manifests if d.ref_name)

    def image(self, name: str | None = None, *, platform: Platform | None = None) -> Image:
        return resolve_image(self.index(), self.blobs, name=name, platform=platform,
                             source=str(self.root))

    # --- writing -----------------------------------------------------------------------
    def write_blob(self, digest: Digest, size: int, stream: BinaryIO) -> None:
        """Store a blob unless present; the bytes are verified before the rename."""
        target = self.blobs.path(digest)
        if target.is_file() and target.stat().st_size == size:
            stream.close()
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out, VerifyingReader(stream, digest, size) as src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise

    def write_image(self, image: Image, name: str | None = None, *,
                    watch: BlobWatch | None = None) -> Descriptor:
        """Add an image and its blobs; an entry with the same name is replaced (its blobs
        stay). Returns the descriptor added to index.json. ``watch`` wraps each blob's stream
        as it is copied in."""
        check_ref_name(name)
        for digest, size, opener in image_blobs(image):
            if not self.blobs.has(digest):
                stream = opener()
                self.write_blob(digest, size,
                                stream if watch is None else watch(digest, size, stream))
        desc = image.descriptor(**({ANNOTATION_REF_NAME: name} if name else {}))
        self._add_entry(desc, name)
        return desc

    def write_index(self, images: Iterable[Image], name: str | None = None, *,
                    docker: bool = False) -> Descriptor:
        """A multi-platform image: each image, and an index blob listing them by platform."""
        check_ref_name(name)
        entries = []
        for image in images:
            for digest, size, opener in image_blobs(image):
                if not self.blobs.has(digest):
                    self.write_blob(digest, size, opener())
            entries.append(image.descriptor())
        index = Index(tuple(entries))
        data = index.to_json(docker=docker)
        digest = Digest.from_bytes(data)
        self.write_blob(digest, len(data), _bytes_io(data))
        desc = Descriptor(mt.DOCKER_MANIFEST_LIST if docker else mt.OCI_INDEX, digest,
                          len(data), annotations={ANNOTATION_REF_NAME: name} if name else {})
        self._add_entry(desc, name)
        return desc

    def _add_entry(self, desc: Descriptor, name: str | None) -> None:
        check_ref_name(name)
        index = self.index()
        kept = [d for d in index.manifests
                if not (name and d.ref_name == name) and not (not name and d == desc)]
        self._write_atomic(INDEX_FILE, index.with_manifests([*kept, desc]).to_json())

    def remove(self, name: str) -> None:
        """Drop the entry named ``name`` (blobs stay; a layout has no garbage collector)."""
        index = self.index()
        kept = [d for d in index.manifests if d.ref_name != name]
        if len(kept) == len(index.manifests):
            raise RefNotFoundError(f"{self.root}: no image named {name!r}", name=name,
                                   available=self.names())
        self._write_atomic(INDEX_FILE, index.with_manifests(kept).to_json())

    def _write_atomic(self, relative: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, self.root / relative)


def check_ref_name(name: str | None) -> None:
    """ImageFormatError unless ``name`` fits the layout spec's ref.name grammar."""
    if name is not None and not _REF_NAME.match(name):
        raise ImageFormatError(f"invalid image name {name!r} for an OCI layout",
                               hint="use letters, digits and . _ - : @ + /, e.g. 'v1.0'")


def write_layout(root: str | Path, image: Image, name: str | None = None) -> Descriptor:
    """Write ``image`` into the layout at ``root`` (created when missing) as ``name``."""
    return Layout.create(root).write_image(image, name)


def read_layout(root: str | Path, name: str | None = None, *,
                platform: Platform | None = None) -> Image:
    """The image named ``name`` in the layout at ``root`` (the only one when None)."""
    return Layout.open(root).image(name, platform=platform)


__all__ = ["Layout", "read_layout", "write_layout", "resolve_image", "image_blobs",
           "layout_marker", "LAYOUT_FILE", "INDEX_FILE"]
