"""OCI archives: an OCI image layout in one tar file (skopeo's ``oci-archive:``).

Writing streams every blob straight from its source into the tar (no layout on disk first);
reading indexes the tar once and reads blobs in place, each verified as it is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from cloche.oci import mediatypes as mt
from cloche.oci._tario import MemberNotFoundError, TarIndex, TarWriter, finish_destination, open_destination
from cloche.oci.descriptor import ANNOTATION_REF_NAME, Descriptor
from cloche.oci.digest import Digest
from cloche.oci.errors import BlobNotFoundError, ImageFormatError
from cloche.oci.image import Image
from cloche.oci.layout import (
    INDEX_FILE,
    LAYOUT_FILE,
    BlobWatch,
    check_ref_name,
    image_blobs,
    layout_marker,
    resolve_image,
)
from cloche.oci.manifest import Index
from cloche.oci.platform import Platform

NamedImages = Iterable[tuple[Image, "str | Sequence[str] | None"]]
CONTAINERD_NAME = "io.containerd.image.name"
MANIFEST_FILE = "manifest.json"


def name_annotations(name: str) -> dict[str, str]:
    """An index entry's annotations for ``name``, as BuildKit's exporters (containerd's
    archive writer) write them: the full name in ``io.containerd.image.name`` (podman and
    ``cloche load`` read it), its tag as the OCI ``ref.name`` (skopeo's ``oci-archive:PATH:TAG``).
    A ``name`` that is only a tag-like word (``v1``) is the ref name alone."""
    from cloche.oci.reference import Reference

    if "/" not in name and ":" not in name:
        check_ref_name(name)
        return {ANNOTATION_REF_NAME: name}
    ref = Reference.parse(name)
    return {CONTAINERD_NAME: str(ref), ANNOTATION_REF_NAME: ref.tag or "latest"}


def _names(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def write_oci_archive(dest: str | Path | BinaryIO, images: NamedImages | Image,
                      name: str | Sequence[str] | None = None, *,
                      docker_manifest: bool = True,
                      descriptor_annotations: Mapping[str, str] | None = None,
                      watch: BlobWatch | None = None) -> None:
    """Write images (``(image, names)`` pairs, or one image and ``name``) as one archive that
    OCI tools and ``docker load`` both read, as BuildKit's oci and docker exporters write it:
    an OCI layout (``oci-layout``, ``index.json``, ``blobs/``) with one index entry per name
    (``name_annotations``), and, with ``docker_manifest``, Docker's ``manifest.json`` naming
    the same blobs (``RepoTags`` the familiar names). A path is written under a temporary name
    and renamed when complete. ``watch`` wraps each blob's stream as it is copied in (the
    engine's progress counts the bytes)."""
    pairs: list[tuple[Image, list[str]]] = [(images, _names(name))] \
        if isinstance(images, Image) else [(image, _names(names)) for image, names in images]
    annotated = [[name_annotations(n) for n in names] for _, names in pairs]
    stream, tmp = open_destination(dest)
    ok = False
    tar = TarWriter(stream)
    try:
        tar.add_bytes(LAYOUT_FILE, layout_marker())
        written: set[Digest] = set()
        entries: list[Descriptor] = []
        docker_entries: list[dict[str, object]] = []
        for (image, _), annotations in zip(pairs, annotated):
            for digest, size, opener in image_blobs(image):
                if digest in written:
                    continue
                written.add(digest)
                blob = opener() if watch is None else watch(digest, size, opener())
                with blob:
                    tar.add_stream(f"blobs/{digest.algorithm}/{digest.hex}", blob, size)
            entries.extend(image.descriptor(**{**(descriptor_annotations or {}), **a})
                           for a in annotations or [{}])
            tags = [_familiar(a[CONTAINERD_NAME]) for a in annotations if CONTAINERD_NAME in a]
            docker_entries.append({
                "Config": f"blobs/{image.config_digest.algorithm}/{image.config_digest.hex}",
                "RepoTags": tags or None,
                "Layers": [f"blobs/{layer.digest.algorithm}/{layer.digest.hex}"
                           for layer in image.layers]})
        tar.add_bytes(INDEX_FILE, Index(tuple(entries)).to_json())
        if docker_manifest:
            tar.add_bytes(MANIFEST_FILE, json.dumps(docker_entries, separators=(",", ":")
                                                    ).encode())
        tar.close()
        ok = True
    finally:
        if not ok:
            tar.abort()
        finish_destination(stream, tmp, dest, ok)


def _familiar(name: str) -> str:
    from cloche.oci.reference import Reference

    return Reference.parse(name).familiar


class TarBlobSource:
    """Blobs read in place from ``blobs/ALG/HEX`` members of an indexed tar."""

    def __init__(self, tar: TarIndex, prefix: str = "blobs") -> None:
        self._tar = tar
        self._prefix = prefix

    def _name(self, digest: Digest) -> str:
        return f"{self._prefix}/{digest.algorithm}/{digest.hex}"

    def has(self, digest: Digest) -> bool:
        return self._tar.has(self._name(digest))

    def open(self, digest: Digest) -> BinaryIO:
        try:
            return self._tar.open(self._name(digest))
        except MemberNotFoundError:
            raise BlobNotFoundError(f"blob {digest} not found", digest=digest,
                                    source=self._tar.path) from None

    def size(self, digest: Digest) -> int:
        try:
            return self._tar.size(self._name(digest))
        except MemberNotFoundError:
            raise BlobNotFoundError(f"blob {digest} not found", digest=digest,
                                    source=self._tar.path) from None


class OciArchive:
    """An OCI archive file opened for reading."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.tar = TarIndex(path)
        if not self.tar.has(LAYOUT_FILE) or not self.tar.has(INDEX_FILE):
            raise ImageFormatError("not an OCI archive (no oci-layout or index.json)",
                                   source=self.path)
        self.blobs = TarBlobSource(self.tar)

    def index(self) -> Index:
        return Index.from_json(self.tar.read(INDEX_FILE), media_type=mt.OCI_INDEX,
                               source=f"{self.path}:{INDEX_FILE}")

    def names(self) -> tuple[str, ...]:
        return tuple(d.ref_name for d in self.index().manifests if d.ref_name)

    def image(self, name: str | None = None, *, platform: Platform | None = None) -> Image:
        return resolve_image(self.index(), self.blobs, name=name, platform=platform,
                             source=self.path)


def read_oci_archive(path: str | Path, name: str | None = None, *,
                     platform: Platform | None = None) -> Image:
    """The image named ``name`` (the only one when None) in the OCI archive at ``path``.
    Its layers stay in the archive file, read on demand."""
    return OciArchive(path).image(name, platform=platform)
