"""Images between the store and files: ``save`` to an OCI archive or a docker-archive, and
``load`` from either (told apart by their contents, never by the file name).

Names: an OCI archive written here carries the canonical name in
``org.opencontainers.image.ref.name``; on load, ``io.containerd.image.name`` (what Docker and
containerd write) wins, then a ref.name that is a full reference. A ref.name that is only a tag
(``latest``) names no repository, so such an image is loaded without a name, as Docker does.
A compressed archive (``docker save | gzip``) is first decompressed into the store's tmp
directory, because both readers index the tar in place.
These are operations of the face (``cloche.save``, ``cloche.load``): they join the store with
the archive formats of the image core; the store itself keeps blobs, names and locks only.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cloche.compression import Compression, DecompressionError, detect_compression, open_decompressed
from cloche.errors import InvalidReferenceError, StoreError
from cloche.fs.rmtree import rmtree
from cloche.oci.archive import OciArchive, write_oci_archive
from cloche.oci.image import Image
from cloche.oci.layout import resolve_image
from cloche.oci.platform import Platform
from cloche.store.images import is_index
from cloche.store.store import Store, StoredImage, parse_name

CONTAINERD_NAME = "io.containerd.image.name"
FORMATS = ("oci", "docker")


class ArchiveFormatError(StoreError, ValueError):
    """A file given to load that is neither an OCI archive nor a docker-archive."""


@dataclass(frozen=True)
class LoadedImage:
    """One image ``load`` put in the store, with the names it got (maybe none)."""

    image: Image
    names: tuple[str, ...]


def save(store: Store, refs: Iterable[str], dest: str | Path | BinaryIO, *,
         format: str = "oci", platform: Platform | None = None) -> list[Image]:
    """Write the images ``refs`` name into one archive at ``dest`` (a path or a stream)."""
    if format not in FORMATS:
        raise StoreError(f"unknown archive format {format!r}", hint="use oci or docker")
    pairs: list[tuple[Image, str | None]] = []
    for ref in refs:
        entry = store.lookup(ref)
        image = store.image(str(entry.descriptor.digest), platform)
        pairs.append((image, entry.name if _is_name_of(ref, entry.name) else None))
    # one archive for both formats, as BuildKit's exporters write it: the OCI layout (names in
    # io.containerd.image.name, tags as ref.name) and docker load's manifest.json together
    write_oci_archive(dest, pairs)
    return [img for img, _ in pairs]


def _is_name_of(text: str, name: str | None) -> bool:
    """True when ``text`` was a name (so the archive should carry it), not an ID or digest."""
    if name is None:
        return False
    try:
        ref = parse_name(text)
    except InvalidReferenceError:
        return False
    return ref.digest is None and str(ref) == name


def load(store: Store, source: str | Path | BinaryIO, *,
         platform: Platform | None = None) -> list[LoadedImage]:
    """Store every image of an OCI archive or docker-archive; returns what was loaded."""
    tmp_dir = Path(tempfile.mkdtemp(prefix="load-", dir=store.blobs.tmp_dir))
    label = str(source) if isinstance(source, (str, Path)) else "standard input"
    try:
        path = _plain_tar(source, tmp_dir, label)
        kind = _sniff(path, label)
        if kind == "oci":
            return _load_oci(store, path, platform, label)
        return _load_docker(store, path)
    finally:
        rmtree(tmp_dir, True)


def _plain_tar(source: str | Path | BinaryIO, tmp_dir: Path, label: str) -> Path:
    """A path to the archive as an uncompressed tar (the file itself when it already is one)."""
    if isinstance(source, (str, Path)):
        try:
            with open(source, "rb") as f:
                head = f.read(512)
        except OSError as e:
            raise ArchiveFormatError(f"cannot read {source}: {e.strerror or e}") from e
        if detect_compression(head) is Compression.NONE:
            return Path(source)
        stream: BinaryIO = open(source, "rb")
    else:
        stream = source
    out = tmp_dir / "archive.tar"
    try:
        with stream, open_decompressed(stream) as raw, open(out, "wb") as f:
            shutil.copyfileobj(raw, f, 1 << 20)
    except (DecompressionError, OSError) as e:
        raise ArchiveFormatError(f"{label}: corrupt or truncated compressed archive: {e}") from e
    return out


def _sniff(path: Path, label: str) -> str:
    """``oci`` or ``docker`` from the archive's top-level members."""
    names: set[str] = set()
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                names.add(os.path.normpath(info.name.lstrip("/")))
                tar.members.clear()  # type: ignore[attr-defined]  # bounded memory
    except (tarfile.TarError, OSError, EOFError) as e:
        what = "a truncated tar archive" if names else "not a tar archive"
        raise ArchiveFormatError(f"{label}: {what} ({e})") from e
    if "oci-layout" in names and "index.json" in names:  # with or without manifest.json
        return "oci"  # the layout keeps the manifests as they were, names in annotations
    if "manifest.json" in names:
        return "docker"
    if "oci-layout" in names:
        return "oci"
    raise ArchiveFormatError(f"{label}: neither an OCI archive (oci-layout, index.json) nor a "
                             "docker-archive (manifest.json)")


def _load_oci(store: Store, path: Path, platform: Platform | None,
              label: str) -> list[LoadedImage]:
    archive = OciArchive(path)
    index = archive.index()
    out = []
    for entry in index.manifests:
        image = resolve_image(index.with_manifests([entry]), archive.blobs, platform=platform,
                              source=label)
        names = _names_for(entry.annotations)
        _check_layers(store, image, names[0] if names else f"{label} ({entry.digest})")
        store.put_image(image, names)
        out.append(LoadedImage(image, tuple(names)))
    return out


def _names_for(annotations: Mapping[str, str]) -> list[str]:
    from cloche.oci.descriptor import ANNOTATION_REF_NAME

    get = annotations.get
    for key, need_repo in ((CONTAINERD_NAME, False), (ANNOTATION_REF_NAME, True)):
        value = get(key)
        if not value or (need_repo and "/" not in value and ":" not in value):
            continue
        try:
            ref = parse_name(value)
        except InvalidReferenceError:
            continue
        if ref.digest is None:
            return [str(ref)]
    return []


def _load_docker(store: Store, path: Path) -> list[LoadedImage]:
    from cloche.oci.docker_archive import DockerArchive

    out = []
    for image, tags in DockerArchive(path).images():
        names = [str(parse_name(t)) for t in tags]
        _check_layers(store, image, names[0] if names else f"{path} ({image.config_digest})")
        same = _same_image(store, image)
        if same is None:
            store.put_image(image, names)
        else:
            for name in names:
                store.tag(name, same.descriptor)
            image = store.image(str(same.descriptor.digest))
        out.append(LoadedImage(image, tuple(names)))
    return out


def _check_layers(store: Store, image: Image, name: str) -> None:
    """Refuse an image whose config's diff ids are not its layers' (as ``docker load``
    does): the store would otherwise pass the false ones into every image built on it."""
    from cloche.layers.diffids import verify_diff_ids

    verify_diff_ids(image, name, records=store.root / "diffids")


def _same_image(store: Store, image: Image) -> StoredImage | None:
    """A stored image with the same ID (config digest, which lists the diff ids).

    A docker-archive has no manifest, only a config and uncompressed layers; as in Docker, an
    image with the same ID is the same image, so loading it again only adds names instead of
    a second copy with uncompressed layers.
    """
    for entry in store.list_images():
        if entry.image_id == image.config_digest and not is_index(entry.descriptor):
            return entry
    return None
