"""The local store: one OCI image layout under a root directory, shared by cloche processes.

    <root>/oci-layout, index.json      the layout (names as ref.name annotations)
    <root>/blobs/sha256/<hex>          manifests, configs and layers, by digest
    <root>/tmp/                        blobs being written (same file system, for rename)
    <root>/snapshots/, <root>/cache/, <root>/builds/
                                       the build engine's areas (``Store.snapshots_dir``...)

The root and the engine's areas are 0700 (see ``root.make_private``): they hold flattened
images with their setuid files and device nodes, which no other local user may reach.

Names are canonical references (``docker.io/library/busybox:latest``) so that ``busybox``,
``library/busybox:latest`` and ``docker.io/library/busybox`` are one image, as in Docker.
An image is addressed by a name, by its manifest digest, or by its ID (the config digest, as
``docker images`` shows it), in full or as an unambiguous hex prefix.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloche.errors import ImageNotFoundError, InvalidReferenceError, StoreError
from cloche.oci._frozen import FrozenMap
from cloche.oci.descriptor import Descriptor
from cloche.oci.digest import Digest
from cloche.oci.reference import Reference
from cloche.store.blobs import BlobStore
from cloche.store.index import REF_NAME, NameIndex, entry_name
from cloche.store.lock import locked
from cloche.store.root import default_root, make_private

if TYPE_CHECKING:
    from cloche.oci.image import Image
    from cloche.oci.platform import Platform

_HEX_PREFIX = re.compile(r"^(?:sha256:)?([a-f0-9]{1,64})$")
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")
DEFAULT_GC_GRACE = 3600.0
# The areas that hold unpacked trees (setuid files, devices) or data being written: owner-only.
_PRIVATE_AREAS = ("snapshots", "cache", "builds", "tmp")


class AmbiguousImageError(ImageNotFoundError):
    """A short ID that matches more than one image."""


@dataclass(frozen=True)
class StoredImage:
    """One entry of the store: a name (None for a dangling image), its descriptor and ID."""

    name: str | None
    descriptor: Descriptor
    image_id: Digest

    @property
    def familiar(self) -> str | None:
        """The name as Docker prints it (``busybox:latest``)."""
        return None if self.name is None else parse_name(self.name).familiar


@dataclass(frozen=True)
class GcReport:
    """What ``Store.gc`` removed."""

    blobs_removed: int
    bytes_freed: int


def parse_name(text: str) -> Reference:
    """A reference normalised as Docker does (``busybox`` -> ``docker.io/library/busybox``)."""
    return Reference.parse(text)


def canonical_name(text: str) -> str:
    """The store key of a name: ``busybox`` -> ``docker.io/library/busybox:latest``."""
    ref = parse_name(text)
    if ref.digest is not None:
        raise InvalidReferenceError(f"cannot use a digest reference as a name: {text!r}",
                                    hint="give a tag, such as NAME:TAG")
    return str(ref)


class Store:
    """A content store and its names; open one with ``Store.open``."""

    def __init__(self, root: Path) -> None:
        # absolute: the sandbox's mounts and the cache's paths hang off it (a relative --root
        # once broke every RUN's bind mounts)
        root = Path(os.path.abspath(root))
        self.root = root
        try:
            make_private(root, [root / area for area in _PRIVATE_AREAS])
            self.blobs = BlobStore(root)
            self.index = NameIndex(root)
        except OSError as e:
            raise StoreError(f"cannot use the store at {root}: {e.strerror or e}",
                             hint="pass --root DIR or set CLOCHE_ROOT to a writable directory") from e

    @classmethod
    def open(cls, root: Path | str | None = None) -> Store:
        """The store at ``root``, else ``$CLOCHE_ROOT``, else the per-user or system default."""
        return cls(Path(root) if root is not None else default_root())

    @contextmanager
    def lease(self) -> Iterator[None]:
        """Keep ``gc`` out while a multi-step write (blobs, then a name) is under way.

        A lease is a shared lock on ``gc.lock``; ``gc`` takes it exclusively, so it waits for
        every lease to end and no lease starts while it runs. Leases nest and overlap freely.
        """
        with locked(self.gc_lock, shared=True):
            yield

    # --- named areas: the build engine's directories under the root, named once here --------

    @property
    def snapshots_dir(self) -> Path:
        """Unpacked trees: step snapshots (``steps/``), base images (``images/``)."""
        return self.root / "snapshots"

    @property
    def cache_dir(self) -> Path:
        """The build cache's records (``steps/``, ``stat/``) and cache mounts (``mounts/``)."""
        return self.root / "cache"

    @property
    def builds_dir(self) -> Path:
        """One scratch directory per running build."""
        return self.root / "builds"

    @property
    def tmp_dir(self) -> Path:
        """Files being written (same file system as the blobs, so a rename publishes them)."""
        return self.blobs.tmp_dir

    @property
    def gc_lock(self) -> Path:
        """The lock ``lease`` shares and ``gc`` (or a prune) takes exclusively."""
        return self.root / "gc.lock"

    # --- names ---------------------------------------------------------------------------

    def tag(self, name: str, descriptor: Descriptor) -> str:
        """Point ``name`` at the image ``descriptor`` describes; returns the canonical name."""
        key = canonical_name(name)
        if not self.blobs.has(descriptor.digest):
            raise StoreError(f"cannot tag {name}: manifest {descriptor.digest} is not in the store")
        self.index.set_name(key, _plain(descriptor).to_dict())
        return key

    def untag(self, name: str) -> Descriptor:
        """Remove a name; returns what it pointed at. Blobs stay until ``gc``."""
        key = canonical_name(name)
        removed = self.index.remove_name(key)
        if removed is None:
            raise ImageNotFoundError(f"no such image: {name}")
        return _plain(Descriptor.from_dict(removed))

    def remove(self, digest: Digest) -> list[str]:
        """Forget every entry for one image (manifest digest); returns the names it had."""
        removed = self.index.remove_digest(str(digest))
        if not removed:
            raise ImageNotFoundError(f"no such image: {digest}")
        return [n for n in (entry_name(e) for e in removed) if n]

    def names(self) -> list[tuple[str, Descriptor]]:
        """Every (canonical name, descriptor) pair, sorted by name."""
        out = []
        for e in self.index.entries():
            name = entry_name(e)
            if name:
                out.append((name, _plain(Descriptor.from_dict(e, source=str(self.index.path)))))
        return sorted(out, key=lambda pair: pair[0])

    def list_images(self) -> list[StoredImage]:
        """Every entry, named and dangling, with its image ID, named ones first."""
        out = []
        for e in self.index.entries():
            desc = _plain(Descriptor.from_dict(e, source=str(self.index.path)))
            out.append(StoredImage(entry_name(e), desc, self.image_id(desc)))
        return sorted(out, key=lambda s: (s.name is None, s.name or "", str(s.image_id)))

    def image_id(self, descriptor: Descriptor) -> Digest:
        """Docker's image ID: the config digest of a manifest, the digest of an index."""
        if descriptor.media_type in _INDEX_TYPES or not self.blobs.exists(descriptor.digest):
            return descriptor.digest
        doc = self._json(descriptor.digest)
        try:
            return Digest.parse(doc["config"]["digest"])
        except (KeyError, TypeError, ValueError):
            return descriptor.digest

    def resolve(self, name_or_digest: str) -> Descriptor:
        """The descriptor of an image given by name, digest, ID or short ID."""
        return self.lookup(name_or_digest).descriptor

    def lookup(self, name_or_digest: str) -> StoredImage:
        """Like ``resolve``, with the name and ID of the entry found."""
        text = name_or_digest.strip()
        entries = self.list_images()
        by_name = self._by_name(text, entries)
        if by_name is not None:
            return by_name
        m = _HEX_PREFIX.match(text)
        if m:
            prefix = m.group(1)
            hits: dict[Digest, StoredImage] = {}
            for s in entries:
                if s.image_id.hex.startswith(prefix) or s.descriptor.digest.hex.startswith(prefix):
                    hits.setdefault(s.descriptor.digest, s)
            if len(hits) == 1:
                return next(iter(hits.values()))
            if len(hits) > 1:
                raise AmbiguousImageError(f"{text!r} matches {len(hits)} images",
                                          hint="give more characters of the ID")
        raise ImageNotFoundError(f"no such image: {name_or_digest}",
                                 hint="`cloche images` lists what the store holds")

    def _by_name(self, text: str, entries: list[StoredImage]) -> StoredImage | None:
        if _HEX_PREFIX.match(text) and len(text) >= 64:
            return None  # a full hex string is an ID, never a repository name
        try:
            ref = parse_name(text)
        except InvalidReferenceError:
            return None
        if ref.digest is not None:
            for s in entries:
                if s.descriptor.digest == ref.digest and (
                        s.name is None or parse_name(s.name).name == ref.name):
                    return s
            for s in entries:
                if s.descriptor.digest == ref.digest:
                    return s
            return None
        key = str(ref)
        return next((s for s in entries if s.name == key), None)

    # --- images ----------------------------------------------------------------------------

    def image(self, name_or_digest: str, platform: Platform | None = None) -> Image:
        """The image an entry names, its bytes read from this store's blobs."""
        from cloche.store.images import load_image

        return load_image(self, self.resolve(name_or_digest), platform)

    def put_image(self, image: Image, names: Iterable[str] = ()) -> Descriptor:
        """Store every blob of ``image`` (verified) and give it ``names`` (or keep it unnamed)."""
        from cloche.store.images import store_image

        with self.lease():
            return store_image(self, image, list(names))

    # --- garbage collection --------------------------------------------------------------

    def gc(self, *, grace_seconds: float = DEFAULT_GC_GRACE,
           extra_roots: Iterable[Digest] = (), wait: bool = True) -> GcReport:
        """Delete blobs no entry reaches, and stale temporary files.

        Runs when no ``lease`` is held. Blobs written or touched less than ``grace_seconds``
        ago are kept too, for writers that take no lease: another process may be between
        writing an image's blobs and naming it. ``extra_roots`` lets the build cache keep what
        it references. ``wait=False`` raises ``LockBusyError`` instead of waiting for leases.
        """
        with locked(self.gc_lock, wait=wait), locked(self.index.lock_path):
            live: set[Digest] = set()
            pending = [Digest.parse(str(e["digest"])) for e in self.index._read()]
            pending.extend(extra_roots)
            while pending:
                d = pending.pop()
                if d in live:
                    continue
                live.add(d)
                pending.extend(self._children(d))
            cutoff = time.time() - grace_seconds
            removed = freed = 0
            for d in list(self.blobs.digests()):
                if d in live:
                    continue
                try:
                    if self.blobs.path(d).stat().st_mtime > cutoff:
                        continue
                except FileNotFoundError:
                    continue
                freed += self.blobs.delete(d)
                removed += 1
            freed += self.blobs.clean_tmp(grace_seconds)
        return GcReport(removed, freed)

    def _children(self, digest: Digest) -> list[Digest]:
        """Digests a manifest or index blob references (nothing for other blobs)."""
        if not self.blobs.exists(digest) or self.blobs.size(digest) > 4 << 20:
            return []
        try:
            doc = self._json(digest)
        except StoreError:
            return []
        if not isinstance(doc, dict):
            return []
        refs: list[Any] = []
        if isinstance(doc.get("config"), dict):
            refs.append(doc["config"])
        for key in ("layers", "manifests"):
            if isinstance(doc.get(key), list):
                refs.extend(doc[key])
        out = []
        for r in refs:
            try:
                out.append(Digest.parse(r["digest"]))
            except (KeyError, TypeError, ValueError):
                continue
        return out

    def _json(self, digest: Digest) -> Any:
        try:
            return json.loads(self.blobs.read_bytes(digest))
        except (ValueError, RecursionError) as e:  # RecursionError: nested too deep
            raise StoreError(f"blob {digest} is not JSON: {e}") from e


def _plain(descriptor: Descriptor) -> Descriptor:
    """The descriptor without the name annotation (names live in the index, not in values)."""
    if REF_NAME not in descriptor.annotations:
        return descriptor
    kept = {k: v for k, v in descriptor.annotations.items() if k != REF_NAME}
    return replace(descriptor, annotations=FrozenMap(kept))
