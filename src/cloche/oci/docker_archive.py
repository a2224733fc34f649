"""docker-archive: the tar that ``docker save`` writes and ``docker load`` reads.

Its heart is ``manifest.json``: a list of ``{"Config", "RepoTags", "Layers"}`` whose paths name
members of the tar. cloche writes it as BuildKit's docker exporter does, beside an OCI layout
of the same blobs (``blobs/sha256/<hex>``, layers as stored: ``docker load`` decompresses a
compressed one and checks it against the config's diff id). Reading accepts every form Docker
has written: legacy ``<id>/layer.tar`` folders (with the symlinks docker uses for shared
layers) and the newer ``blobs/sha256/<hex>``, plain or compressed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from cloche.compression import SNIFF_SIZE, detect_compression
from cloche.oci import _json
from cloche.oci import mediatypes as mt
from cloche.oci._tario import TarIndex
from cloche.oci.digest import Digest, Digester, verify
from cloche.oci.errors import BlobNotFoundError, ImageFormatError, RefNotFoundError
from cloche.oci.image import Image, Layer

if TYPE_CHECKING:
    from cloche.oci.layout import BlobWatch

MANIFEST_FILE = "manifest.json"
_HEX64 = re.compile(r"([a-f0-9]{64})(?:\.json)?$")

TaggedImages = Iterable[tuple[Image, Sequence[str]]]


def normalize_tag(tag: str) -> str:
    """``name[:tag]`` with ``:latest`` added when no tag is given, as docker load wants."""
    if "@" in tag:
        raise ImageFormatError(f"a docker-archive cannot name an image by digest: {tag!r}")
    last = tag.rsplit("/", 1)[-1]
    return tag if ":" in last else f"{tag}:latest"


def _qualified(tag: str) -> str:
    """Docker's full spelling of a tag, so ``busybox`` finds ``docker.io/library/busybox:latest``
    (skopeo writes the full form, docker the short one)."""
    tag = normalize_tag(tag)
    first, sep, rest = tag.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"):
        tag = f"docker.io/{tag}"
    if tag.startswith("docker.io/") and "/" not in tag[len("docker.io/"):]:
        tag = "docker.io/library/" + tag[len("docker.io/"):]
    return tag


def write_docker_archive(dest: str | Path | BinaryIO, images: TaggedImages | Image,
                         tags: Sequence[str] = (), *,
                         descriptor_annotations: Mapping[str, str] | None = None,
                         watch: BlobWatch | None = None) -> None:
    """Write images with their tags (``(image, tags)`` pairs, or one image and ``tags``) as
    BuildKit's docker exporter writes them: ``manifest.json`` for ``docker load`` (Docker 20.10
    and later read the stored layers, plain or compressed) together with the OCI layout of the
    same blobs (oci/archive.py), so OCI tools read the same file."""
    from cloche.oci.archive import write_oci_archive

    pairs = [(images, tags)] if isinstance(images, Image) else list(images)
    write_oci_archive(dest, [(image, [normalize_tag(t) for t in image_tags])
                             for image, image_tags in pairs],
                      descriptor_annotations=descriptor_annotations, watch=watch)


@dataclass(frozen=True)
class DockerArchiveEntry:
    """One image of a docker-archive's manifest.json; paths are members of the tar."""

    config: str
    repo_tags: tuple[str, ...]
    layers: tuple[str, ...]


class _MemberBlobSource:
    """Blobs of an archive by digest, each read from the member found for it."""

    def __init__(self, tar: TarIndex) -> None:
        self._tar = tar
        self._names: dict[Digest, str] = {}

    def add(self, digest: Digest, name: str) -> None:
        self._names.setdefault(digest, name)

    def _name(self, digest: Digest) -> str:
        try:
            return self._names[digest]
        except KeyError:
            raise BlobNotFoundError(f"blob {digest} not found", digest=digest,
                                    source=self._tar.path) from None

    def open(self, digest: Digest) -> BinaryIO:
        return self._tar.open(self._name(digest))

    def size(self, digest: Digest) -> int:
        return self._tar.size(self._name(digest))


class DockerArchive:
    """A docker-archive file opened for reading; layers are read in place."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.tar = TarIndex(path)
        if not self.tar.has(MANIFEST_FILE):
            raise ImageFormatError("not a docker-archive (no manifest.json)", source=self.path,
                                   hint="archives from Docker before 1.10 are not supported")
        doc = _json.loads(self.tar.read(MANIFEST_FILE), what="manifest.json",
                          source=self.path)
        if not isinstance(doc, list):
            raise ImageFormatError("manifest.json is not a list", source=self.path)
        self.entries = tuple(self._entry(item) for item in doc)
        self._blobs = _MemberBlobSource(self.tar)

    def _entry(self, item: object) -> DockerArchiveEntry:
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str):
            raise ImageFormatError("manifest.json entry without a Config path", source=self.path)
        tags = item.get("RepoTags") or []
        layers = item.get("Layers") or []
        if not all(isinstance(t, str) for t in tags) or not all(isinstance(x, str) for x in layers):
            raise ImageFormatError("manifest.json RepoTags and Layers must be lists of strings",
                                   source=self.path)
        return DockerArchiveEntry(item["Config"], tuple(tags), tuple(layers))

    def tags(self) -> tuple[str, ...]:
        return tuple(t for e in self.entries for t in e.repo_tags)

    def find(self, tag: str | None = None) -> DockerArchiveEntry:
        if tag is None:
            if len(self.entries) != 1:
                raise RefNotFoundError(f"{self.path}: holds {len(self.entries)} images, name one",
                                       name="", available=self.tags())
            return self.entries[0]
        wanted = _qualified(tag)
        for entry in self.entries:
            if any(_qualified(t) == wanted for t in entry.repo_tags):
                return entry
        raise RefNotFoundError(f"{self.path}: no image tagged {tag!r}", name=tag,
                               available=self.tags())

    def images(self, *, docker: bool = False) -> list[tuple[Image, tuple[str, ...]]]:
        return [(self._image(e, docker), e.repo_tags) for e in self.entries]

    def image(self, tag: str | None = None, *, docker: bool = False) -> Image:
        """The image tagged ``tag`` (the only one when None), as an OCI image by default,
        with uncompressed layers that stay in the archive."""
        return self._image(self.find(tag), docker)

    def _image(self, entry: DockerArchiveEntry, docker: bool) -> Image:
        config_bytes = self.tar.read(entry.config)
        config_digest = Digest.from_bytes(config_bytes)
        named = _HEX64.search(entry.config)
        if named:
            verify(Digest("sha256", named.group(1)), config_digest, f"config {entry.config}")
        from cloche.oci.config import ImageConfig
        config = ImageConfig.from_json(config_bytes, source=f"{self.path}:{entry.config}")
        if len(config.diff_ids) != len(entry.layers):
            raise ImageFormatError(f"{len(entry.layers)} layers for {len(config.diff_ids)} "
                                   "diff ids in the config", source=self.path)
        layers = tuple(self._layer(name, diff_id, docker)
                       for name, diff_id in zip(entry.layers, config.diff_ids))
        return Image(config_bytes, layers, mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST)

    def _layer(self, name: str, diff_id: Digest, docker: bool) -> Layer:
        """Hash the member once: an uncompressed layer must match its diff id now; a
        compressed one (some tools write them) is checked when it is decompressed."""
        digester = Digester(diff_id.algorithm)
        with self.tar.open(name) as f:
            head = f.read(SNIFF_SIZE)
            digester.update(head)
            while chunk := f.read(1 << 20):
                digester.update(chunk)
        digest = digester.digest()
        kind = detect_compression(head).value
        if kind not in ("none", "gzip", "zstd"):
            raise ImageFormatError(f"layer {name} is {kind}-compressed; image layers are plain, "
                                   "gzip or zstd", source=self.path)
        if kind == "none":
            verify(diff_id, digest, f"layer {name} (against the config's diff id)")
        self._blobs.add(digest, name)
        return Layer(digest, diff_id, digester.size, mt.layer_type(kind, docker=docker),
                     self._blobs)


def read_docker_archive(path: str | Path, tag: str | None = None, *,
                        docker: bool = False) -> Image:
    """The image tagged ``tag`` (the only one when None) in the docker-archive at ``path``."""
    return DockerArchive(path).image(tag, docker=docker)


__all__ = ["DockerArchive", "DockerArchiveEntry", "read_docker_archive",
           "write_docker_archive", "normalize_tag"]
