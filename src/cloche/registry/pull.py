"""Pulling an image from a registry into the local store.

The order matters for safety: blobs (config and layers) first, each verified as it streams and
written through ``BlobStore.writer(expected=digest)`` so wrong bytes are never stored; then the
manifest (verified against the digest asked for); the name last. A pull that fails half way
leaves complete, correct blobs and no name pointing at a partial image. Mirrors are tried
first for reads; when one fails or lacks the image, the registry itself is asked. Progress goes
to a ``cloche.events`` listener: ``LayerExists``, ``LayerPulling`` and ``LayerPulled`` per blob,
and ``BlobProgress`` (``pulling``) as a download's bytes arrive.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from cloche import events as ev
from cloche.errors import ClocheError, RegistryError
from cloche.layers.diffids import verify_diff_ids
from cloche.oci import mediatypes as mt
from cloche.oci.descriptor import Descriptor
from cloche.oci.digest import Digest
from cloche.oci.image import Image
from cloche.oci.manifest import Index, Manifest, parse
from cloche.oci.platform import Platform
from cloche.oci.reference import Reference
from cloche.registry.client import FetchedManifest, RegistryClient
from cloche.registry.config import Endpoint, RegistryConfig

if TYPE_CHECKING:
    from cloche.store import Store

_T = TypeVar("_T")
MAX_CONFIG = 64 << 20  # an image config bigger than this is refused (as Image.from_manifest)


class BlobSink(Protocol):
    def has(self, digest: Digest) -> bool: ...
    def writer(self, expected: Digest | None = None, *, size: int | None = None) -> Any: ...


@dataclass(frozen=True)
class PullResult:
    """What a pull stored: the image manifest chosen (for the platform) and where it came from."""

    reference: Reference
    descriptor: Descriptor          # of the platform's image manifest
    manifest: Manifest
    index_digest: Digest | None     # the index the manifest was picked from, if any
    source: Reference               # the reference at the host that served it (maybe a mirror)
    downloaded: int                 # blobs fetched (the others were already present)


def pull_blobs(ref: Reference, blobs: BlobSink, *, platform: Platform | None = None,
               client: RegistryClient | None = None, config: RegistryConfig | None = None,
               listener: ev.Listener = ev.ignore, workers: int = 4) -> PullResult:
    """Fetch ``ref``'s manifest, config and layers into ``blobs``; tries mirrors first."""
    return _on_endpoints(ref, client, config, lambda c, ep: _pull_from(
        c, ep, ref, blobs, platform or Platform.host(), listener, workers))


def _on_endpoints(ref: Reference, client: RegistryClient | None,
                  config: RegistryConfig | None,
                  fn: Callable[[RegistryClient, Endpoint], _T]) -> _T:
    """``fn`` on the endpoints of ``ref`` (mirrors first) until one serves the image."""
    own = client is None
    client = client or RegistryClient(config)
    try:
        endpoints = client.config.endpoints(ref)
        failures: list[str] = []
        for i, ep in enumerate(endpoints):
            last = i == len(endpoints) - 1
            try:
                client.ping(ep)
                return fn(client, ep)
            except ClocheError as err:
                # a mirror that fails or lacks the image hands over to the next endpoint; so does
                # an unreachable scheme (https then http for an insecure registry)
                unreachable = isinstance(err, RegistryError) and err.status is None
                if last or not (ep.is_mirror or unreachable):
                    if failures:
                        tried = "tried first: " + "; ".join(failures)
                        err.hint = f"{err.hint}\n{tried}" if err.hint else tried
                    raise
                failures.append(f"{ep.base_url}: {err.message}")
        raise RegistryError(f"cannot pull {ref}: no endpoint to try", reference=str(ref))
    finally:
        if own:
            client.close()


@dataclass(frozen=True)
class ResolvedManifest:
    """A reference's manifest for one platform, as a registry endpoint served it (verified
    against its digest by the client), and the config blob's bytes once ``resolve_image``
    read them (verified against the manifest's config digest): what a build needs to key and
    configure a stage on its base before (or without) fetching the layers."""

    reference: Reference
    endpoint: Endpoint
    top: FetchedManifest            # the manifest or index the reference named
    fetched: FetchedManifest        # the platform's image manifest (``top`` when no index)
    manifest: Manifest
    index_digest: Digest | None
    platform: Platform
    config: bytes | None = None


def _resolve_from(client: RegistryClient, ep: Endpoint, ref: Reference,
                  platform: Platform) -> ResolvedManifest:
    top = client.get_manifest(ep)
    source = f"{ep.reference}"
    doc = parse(top.data, media_type=top.media_type or None, source=source)
    index_digest: Digest | None = None
    fetched: FetchedManifest = top
    if isinstance(doc, Index):
        index_digest = top.digest
        chosen = doc.select(platform)
        fetched = client.get_manifest(ep, str(chosen.digest))
        doc = parse(fetched.data, media_type=fetched.media_type or chosen.media_type,
                    source=f"{ep.reference.name}@{chosen.digest}")
        if not isinstance(doc, Manifest):
            raise RegistryError(f"{ref}: the index entry for {platform} is not an image manifest",
                                reference=str(ref))
    assert isinstance(doc, Manifest)
    return ResolvedManifest(ref, ep, top, fetched, doc, index_digest, platform)


def _pull_from(client: RegistryClient, ep: Endpoint, ref: Reference, blobs: BlobSink,
               platform: Platform, listener: ev.Listener, workers: int) -> PullResult:
    return _fetch_blobs(client, _resolve_from(client, ep, ref, platform), blobs, listener,
                        workers)


def _fetch_blobs(client: RegistryClient, resolved: ResolvedManifest, blobs: BlobSink,
                 listener: ev.Listener, workers: int) -> PullResult:
    """The config (from memory when ``resolved`` holds it) and layers of a resolved manifest
    into ``blobs``, then the manifest (and index) themselves."""
    ref, ep, manifest = resolved.reference, resolved.endpoint, resolved.manifest
    top, fetched, index_digest = resolved.top, resolved.fetched, resolved.index_digest
    if resolved.config is not None:
        _store_bytes(blobs, resolved.config, manifest.config.digest)
    wanted = [manifest.config, *manifest.layers]
    todo = []
    seen: set[Digest] = set()
    for desc in wanted:
        if desc.digest in seen:
            continue
        seen.add(desc.digest)
        if blobs.has(desc.digest):
            listener(ev.LayerExists(str(ref), desc))
        else:
            todo.append(desc)

    def fetch(desc: Descriptor) -> None:
        listener(ev.LayerPulling(str(ref), desc))
        meter = ev.BlobMeter(listener, str(ref), desc, "pulling")
        with blobs.writer(expected=desc.digest, size=desc.size) as w:
            def sink(chunk: bytes) -> None:
                w.write(chunk)
                meter.add(len(chunk))

            client.fetch_blob(ep, desc.digest, desc.size, sink)
        meter.finish()
        listener(ev.LayerPulled(str(ref), desc))

    if todo:
        _in_parallel(fetch, todo, workers)
    media_type = manifest.media_type or fetched.media_type or mt.OCI_MANIFEST
    _store_bytes(blobs, fetched.data, fetched.digest)
    if index_digest is not None:
        _store_bytes(blobs, top.data, top.digest)
    descriptor = Descriptor(media_type, fetched.digest, len(fetched.data),
                            platform=resolved.platform if index_digest else None)
    return PullResult(ref, descriptor, manifest, index_digest, ep.reference, len(todo))


def _in_parallel(fn: Callable[[Descriptor], None], items: list[Descriptor], workers: int) -> None:
    """Run ``fn`` over ``items`` on daemon threads; the first error is raised.

    Daemon threads and a waiting loop with a timeout keep Ctrl-C prompt: the main thread is
    never stuck joining a download that waits on a stalled registry (an interrupted download
    leaves only a temporary file, which the store's gc removes)."""
    pending = list(items)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not pending or errors:
                    return
                item = pending.pop(0)
            try:
                fn(item)
            except BaseException as err:  # noqa: BLE001  # handed to the caller
                with lock:
                    errors.append(err)

    threads = [threading.Thread(target=worker, daemon=True, name="cloche-pull")
               for _ in range(max(1, min(workers, len(items))))]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)
    if errors:
        raise errors[0]


def _store_bytes(blobs: BlobSink, data: bytes, digest: Digest) -> None:
    if blobs.has(digest):
        return
    with blobs.writer(expected=digest, size=len(data)) as w:
        w.write(data)


def pull_image(ref: Reference | str, store: Store, platform: Platform | str | None = None, *,
               client: RegistryClient | None = None, config: RegistryConfig | None = None,
               listener: ev.Listener = ev.ignore) -> Image:
    """Pull ``ref`` into ``store`` and return the stored Image.

    A tagged reference names the image in the store by its canonical name (``busybox`` ->
    ``docker.io/library/busybox:latest``); a digest-only reference stores it unnamed, as Docker
    shows ``<none>`` for it, and it is found by digest. Every layer is checked against the
    diff id its config names (DiffIdMismatchError names the reference and the layer)."""
    if isinstance(ref, str):
        ref = Reference.parse(ref)
    if isinstance(platform, str):
        platform = Platform.parse(platform)
    with store.lease():  # gc must not collect the blobs before the name points at them
        result = pull_blobs(ref, store.blobs, platform=platform, client=client, config=config,
                            listener=listener)
        return _name_pulled(ref, store, result)


def _name_pulled(ref: Reference, store: Store, result: PullResult) -> Image:
    """The image of a pull whose blobs are all in ``store``, named there (under a lease)."""
    data = store.blobs.read_bytes(result.descriptor.digest)
    image = Image.from_manifest(data, store.blobs, media_type=result.descriptor.media_type,
                                name=str(ref))
    # the config's diff ids must be the layers' (as moby's layer store checks on pull):
    # an image whose config lies gets no name, and is never built on
    verify_diff_ids(image, str(ref), records=store.root / "diffids")
    if ref.tag:
        store.tag(str(ref.with_tag(ref.tag)), result.descriptor)
    else:
        store.put_image(image)
    return image


def resolve_image(ref: Reference | str, platform: Platform | str | None = None, *,
                  client: RegistryClient | None = None, config: RegistryConfig | None = None
                  ) -> ResolvedManifest:
    """``ref``'s manifest for ``platform`` and its config, and nothing else: no layer, nothing
    stored (a build that may never need the layers, engine/images.py). The manifest is checked
    against its digest by the client (and the index entry's), the config against the
    manifest's config digest and size (at most ``MAX_CONFIG`` bytes); ``pull_resolved`` then
    fetches the rest from the same endpoint without asking for the manifest again."""
    if isinstance(ref, str):
        ref = Reference.parse(ref)
    if isinstance(platform, str):
        platform = Platform.parse(platform)
    want = platform or Platform.host()
    name = ref

    def resolve(c: RegistryClient, ep: Endpoint) -> ResolvedManifest:
        resolved = _resolve_from(c, ep, name, want)
        desc = resolved.manifest.config
        if desc.size > MAX_CONFIG:
            raise RegistryError(f"{name}: the image config is {desc.size} bytes, more than "
                                f"{MAX_CONFIG}; refusing it", reference=str(name))
        parts: list[bytes] = []
        c.fetch_blob(ep, desc.digest, desc.size, parts.append)  # verified, at most desc.size
        data = b"".join(parts)
        if len(data) != desc.size:
            raise RegistryError(f"{name}: the image config is {len(data)} bytes, the manifest "
                                f"says {desc.size}", reference=str(name))
        return replace(resolved, config=data)

    return _on_endpoints(ref, client, config, resolve)


def pull_resolved(resolved: ResolvedManifest, store: Store, *,
                  client: RegistryClient | None = None, config: RegistryConfig | None = None,
                  listener: ev.Listener = ev.ignore, workers: int = 4) -> Image:
    """Finish the pull of a ``resolve_image``: its layers from the endpoint that served the
    manifest, each verified as it streams, then the image named in ``store`` as
    ``pull_image`` names it (after the same diff id check)."""
    own = client is None
    client = client or RegistryClient(config)
    try:
        with store.lease():
            result = _fetch_blobs(client, resolved, store.blobs, listener, workers)
            return _name_pulled(resolved.reference, store, result)
    finally:
        if own:
            client.close()
