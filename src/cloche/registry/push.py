"""Pushing an image (or an index and its images) to a registry.

Blobs go before the manifest that names them, as registries require. A blob the registry has
already is skipped (HEAD); one known to be in another repository of the same registry is
mounted (``POST ...?mount=&from=``), which copies nothing; the rest are uploaded, in one PUT or
in PATCH chunks for big blobs. Blobs are streamed from their source, never loaded whole.
Progress goes to a ``cloche.events`` listener: ``LayerPushed`` per blob, ``ManifestPushed``, and
``BlobProgress`` (``pushing``) as an upload's bytes go out.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

from cloche import events as ev
from cloche.errors import RegistryError
from cloche.oci import mediatypes as mt
from cloche.oci.descriptor import Descriptor
from cloche.oci.digest import Digest
from cloche.oci.image import Image
from cloche.oci.manifest import Manifest, parse
from cloche.oci.reference import Reference
from cloche.registry.client import RegistryClient
from cloche.registry.config import Endpoint, RegistryConfig

if TYPE_CHECKING:
    from cloche.store import Store

MAX_CHILD = 4 << 20


class BlobOpener(Protocol):
    """Anything that opens a blob by digest (``BlobStore`` is one)."""

    def open(self, digest: Digest) -> BinaryIO: ...


@dataclass(frozen=True)
class PushResult:
    reference: Reference
    digest: Digest                  # of the top manifest or index pushed
    media_type: str
    size: int
    uploaded: int
    mounted: int
    skipped: int


def push_manifest(ref: Reference | str, manifest_bytes: bytes, media_type: str | None,
                  blobs: BlobOpener, *, client: RegistryClient | None = None,
                  config: RegistryConfig | None = None, mount_from: Iterable[Reference | str] = (),
                  listener: ev.Listener = ev.ignore, workers: int = 4) -> PushResult:
    """Push a manifest or index (given as its exact bytes) and every blob it names."""
    if isinstance(ref, str):
        ref = Reference.parse(ref)
    own = client is None
    client = client or RegistryClient(config)
    try:
        ep = _endpoint(client, ref)
        sources = [r if isinstance(r, Reference) else Reference.parse(r) for r in mount_from]
        mount_repos = [r.repository for r in sources
                       if r.registry == ref.registry and r.repository != ref.repository]
        counts = {"uploaded": 0, "mounted": 0, "exists": 0}
        identifier = ref.identifier if ref.digest is None else str(ref.digest)
        digest, kind = _push_tree(client, ep, identifier, manifest_bytes, media_type, blobs,
                                  mount_repos, counts, listener, workers, depth=0)
        return PushResult(ref, digest, kind, len(manifest_bytes), counts["uploaded"],
                          counts["mounted"], counts["exists"])
    finally:
        if own:
            client.close()


def push_image(image: Image, ref: Reference | str, *, client: RegistryClient | None = None,
               config: RegistryConfig | None = None, mount_from: Iterable[Reference | str] = (),
               listener: ev.Listener = ev.ignore) -> PushResult:
    """Push an ``Image`` value: its config from memory, its layers from their blob sources."""
    return push_manifest(ref, image.manifest_bytes, image.media_type, ImageBlobs(image),
                         client=client, config=config, mount_from=mount_from, listener=listener)


def push_stored(store: Store, name: str, ref: Reference | str | None = None, *,
                client: RegistryClient | None = None, config: RegistryConfig | None = None,
                listener: ev.Listener = ev.ignore) -> PushResult:
    """Push what ``name`` names in the store (an image, or an index with its images) to
    ``ref`` (default: the name itself). Blobs of the same registry's source repository are
    mounted rather than uploaded."""
    descriptor = store.resolve(name)
    target = ref if ref is not None else name
    target_ref = target if isinstance(target, Reference) else Reference.parse(target)
    try:
        source_ref = [Reference.parse(name)]
    except ValueError:
        source_ref = []
    if mt.is_manifest(descriptor.media_type):
        from cloche.store.compressed import for_distribution

        # a built image keeps plain-tar layers: push their compressed twins, as docker push
        image = store.image(str(descriptor.digest))
        ready = for_distribution(store, image)
        if ready is not image:
            return push_image(ready, target_ref, client=client, config=config,
                              mount_from=source_ref, listener=listener)
    data = store.blobs.read_bytes(descriptor.digest)
    return push_manifest(target_ref, data, descriptor.media_type, store.blobs, client=client,
                         config=config, mount_from=source_ref, listener=listener)


class ImageBlobs:
    """Opens an Image's blobs by digest: the config from memory, layers from their sources."""

    def __init__(self, image: Image) -> None:
        self._config = (image.config_digest, image.config_bytes)
        self._manifest = (image.digest, image.manifest_bytes)
        self._layers = {layer.digest: layer for layer in image.layers}

    def open(self, digest: Digest) -> BinaryIO:
        for known, data in (self._config, self._manifest):
            if digest == known:
                return io.BytesIO(data)
        layer = self._layers.get(digest)
        if layer is None:
            raise RegistryError(f"blob {digest} is not part of the image being pushed")
        return layer.source.open(digest)


def _endpoint(client: RegistryClient, ref: Reference) -> Endpoint:
    endpoints = client.config.push_endpoints(ref)
    for i, ep in enumerate(endpoints):
        try:
            client.ping(ep)
            return ep
        except RegistryError as err:
            if err.status is not None or i == len(endpoints) - 1:
                raise
    raise RegistryError(f"cannot reach {ref.registry}", reference=str(ref))


def _push_tree(client: RegistryClient, ep: Endpoint, identifier: str, data: bytes,
               media_type: str | None, blobs: BlobOpener, mount_repos: list[str],
               counts: dict[str, int], listener: ev.Listener, workers: int,
               depth: int) -> tuple[Digest, str]:
    """Push a manifest, or an index after every manifest it lists; returns digest and type."""
    doc = parse(data, media_type=media_type, source=f"{ep.reference.name}:{identifier}")
    kind = media_type or doc.media_type
    if isinstance(doc, Manifest):
        return _push_one(client, ep, identifier, data, kind, doc, blobs, mount_repos, counts,
                         listener, workers), kind
    if depth > 2:
        raise RegistryError(f"{ep.reference.name}: indexes nested too deep to push",
                            reference=ep.reference.name)
    for child in doc.manifests:
        with blobs.open(child.digest) as f:
            child_data = f.read(MAX_CHILD + 1)
        if len(child_data) > MAX_CHILD:
            raise RegistryError(f"manifest {child.digest} is too large to push",
                                reference=ep.reference.name)
        _push_tree(client, ep, str(child.digest), child_data, child.media_type, blobs,
                   mount_repos, counts, listener, workers, depth + 1)
    digest = client.put_manifest(ep, identifier, data, kind)
    listener(ev.ManifestPushed(str(ep.reference), Descriptor(kind, digest, len(data))))
    return digest, kind


def _push_one(client: RegistryClient, ep: Endpoint, identifier: str, data: bytes, media_type: str,
              doc: Manifest, blobs: BlobOpener, mount_repos: list[str], counts: dict[str, int],
              listener: ev.Listener, workers: int) -> Digest:
    unique: dict[Digest, Descriptor] = {}
    for desc in (doc.config, *doc.layers):
        unique.setdefault(desc.digest, desc)

    def push_blob(desc: Descriptor) -> str:
        if client.blob_exists(ep, desc.digest):
            outcome = "exists"
        else:
            meter = ev.BlobMeter(listener, str(ep.reference), desc, "pushing")
            outcome = client.upload_blob(ep, desc.digest, desc.size,
                                         functools.partial(blobs.open, desc.digest),
                                         mount_from=mount_repos[0] if mount_repos else None,
                                         progress=meter.set)
            if outcome == "uploaded":
                meter.finish()
        listener(ev.LayerPushed(str(ep.reference), desc, outcome))
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(unique)))) as pool:
        for outcome in pool.map(push_blob, unique.values()):
            counts[outcome] += 1
    digest = client.put_manifest(ep, identifier, data, media_type or _media_type(data))
    listener(ev.ManifestPushed(str(ep.reference),
                               Descriptor(media_type or mt.OCI_MANIFEST, digest, len(data))))
    return digest


def _media_type(data: bytes) -> str:
    try:
        return json.loads(data).get("mediaType") or mt.OCI_MANIFEST
    except ValueError:
        return mt.OCI_MANIFEST
