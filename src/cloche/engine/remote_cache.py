"""A build cache shared through a registry or a folder: ``--cache-to`` and ``--cache-from``.

The cache is one OCI artifact (docs/cache.md): a config blob of media type ``CACHE_CONFIG``
that lists, per step, its cache key, its parent's key, its history line and time, and its
layer (the blob's digest and the layer's diff id, or none), and the layer blobs themselves.
By default the artifact is an image index whose entries are the layers and the config (as
BuildKit's registry cache); with ``image-manifest=true`` it is an image manifest whose config
is the cache config (``artifactType`` says so). ``type=local`` writes the same artifact as an
OCI layout in a folder; ``type=inline`` puts the config in the image's own config, under
``INLINE_KEY``, its layers named by their index in the image.

Keys are cloche's step keys (plan/keys.py): hashes of what a step reads, never a secret's
value (a secret mount counts by its id only). Import is lazy: only the manifests and the
cache configs are read when the build starts; a step whose key misses locally is looked up
in them, and only on a hit is its layer fetched, checked against the blob's digest and the
recorded diff id, kept in the store as a plain tar, and its step directory left to unpack
from it when a later step needs its files (``Workspace.unpack``). An entry that does not
verify (a wrong digest or diff id, a missing blob, a layer past the bound of pulled layers,
``CLOCHE_MAX_LAYER_SIZE``) is a miss: the step runs. What a cache source says is trusted as
far as a base image is: whoever may write the cache reference chooses the files of the steps
that hit it.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from cloche.compression import Compression, open_decompressed
from cloche.engine import events as ev
from cloche.engine.cache import BuildCache, CacheRecord
from cloche.engine.options import BuildOptions, CacheSpec
from cloche.engine.workspace import PENDING_LAYER
from cloche.errors import ClocheError, ConfigError, LayerError, RegistryError
from cloche.fs.limits import LayerTooLargeError, max_layer_size, too_large
from cloche.oci import mediatypes as mt
from cloche.oci.digest import Digest, Digester
from cloche.oci.image import Image, Layer, LazyLayer
from cloche.store import Store, atomic_write

if TYPE_CHECKING:
    from cloche.oci.platform import Platform

CACHE_CONFIG = "application/vnd.cloche.cache.config.v1+json"
FORMAT = "cloche.cache.v1"
INLINE_KEY = "cloche.cache.v1"  # the image config's top-level key of an inline cache
MAX_CONFIG = 32 << 20  # a cache config bigger than this is refused
MAX_RECORDS = 200_000
CHUNK = 1 << 20
_REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Blob:
    digest: Digest
    size: int
    media_type: str


@dataclass(frozen=True)
class Entry:
    """One step of an imported cache config."""

    key: str
    parent: str
    created_by: str
    created: str | None
    layer: Blob | None
    diff_id: Digest | None


@dataclass(frozen=True)
class _Noted:
    stage: int
    key: str
    parent: str
    created_by: str
    created: str | None
    layer: Layer | None


class _Source:
    """An imported cache: its entries by key, and how to fetch a blob of it."""

    def __init__(self, name: str, entries: dict[str, Entry],
                 fetch: Callable[[Blob, Callable[[bytes], object]], None]) -> None:
        self.name = name
        self.entries = entries
        self.fetch = fetch
        self.hits = 0


def _is_key(value: object) -> bool:
    return isinstance(value, str) and value.startswith("sha256:") and len(value) == 71 \
        and all(c in "0123456789abcdef" for c in value[7:])


def parse_config(data: bytes, blobs: dict[Digest, Blob] | list[Blob],
                 diff_ids: tuple[Digest, ...] | None = None) -> dict[str, Entry]:
    """The entries of a cache config. A layer names a blob of ``blobs`` (by digest, or by
    index for an inline cache, whose ``diff_ids`` are the image's): an entry naming none, or
    malformed, is left out (a miss)."""
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} cache config")
    records = doc.get("records")
    if not isinstance(records, list) or len(records) > MAX_RECORDS:
        raise ValueError("no records list")
    out: dict[str, Entry] = {}
    for rec in records:
        if not isinstance(rec, dict) or not _is_key(rec.get("key")):
            continue
        created_by, created = rec.get("created_by"), rec.get("created")
        if not isinstance(created_by, str) or not (created is None or isinstance(created, str)):
            continue
        parent = rec.get("parent")
        meta = rec.get("layer")
        layer: Blob | None = None
        diff_id: Digest | None = None
        if meta is not None:
            try:
                diff_id = Digest.parse(meta["diff_id"])
                if isinstance(blobs, list):
                    index = meta["index"]
                    if not isinstance(index, int) or not 0 <= index < len(blobs) \
                            or diff_ids is None or diff_ids[index] != diff_id:
                        continue
                    layer = blobs[index]
                else:
                    layer = blobs[Digest.parse(meta["digest"])]
            except (KeyError, TypeError, ValueError, IndexError, ClocheError):
                continue
        out[rec["key"]] = Entry(rec["key"], parent if isinstance(parent, str) else "",
                                created_by, created, layer, diff_id)
    return out


def _too_large(limit: int, digest: Digest) -> LayerTooLargeError:
    err = too_large(limit)
    err.message = f"layer {digest}: {err.message}"
    err.args = (err.message,)
    return err


def _blob(desc: object) -> Blob:
    if not isinstance(desc, dict):
        raise ValueError("a descriptor is not an object")
    size = desc["size"]
    if not isinstance(size, int) or size < 0:
        raise ValueError("a descriptor's size is not a number")
    return Blob(Digest.parse(desc["digest"]), size, str(desc.get("mediaType", "")))


def _desc(blob: Blob) -> dict[str, Any]:
    return {"mediaType": blob.media_type, "digest": str(blob.digest), "size": blob.size}




class RemoteCache:
    """The ``--cache-from`` sources of one build, and the steps it saw for ``--cache-to``."""

    def __init__(self, store: Store, options: BuildOptions, listener: ev.Listener) -> None:
        self.store = store
        self.options = options
        self.listener = listener
        self.sources: list[_Source] = []
        self._notes: dict[str, _Noted] = {}
        self._lock = threading.Lock()
        self._client: Any = None
        self.exported: list[dict[str, object]] = []
        # the stages whose layers the image is made of: their imported layers are fetched on
        # a hit; any other stage's only when a step needs its files (``fetch_layer``)
        self.shipped: frozenset[int] = frozenset()
        self._pending: dict[Digest, Callable[[], None]] = {}
        self._fetch_locks: dict[Digest, threading.Lock] = {}

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from cloche.registry.client import RegistryClient

                self._client = RegistryClient()
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # -- import ------------------------------------------------------------------------

    def load(self) -> None:
        """Read the manifest and cache config of every ``--cache-from`` (no layer yet); one
        that cannot be read is a warning, as in BuildKit, and the build goes on without it."""
        for spec in self.options.cache_from:
            try:
                source = self._open_local(spec) if spec.type == "local" \
                    else self._open_registry(spec)
            except (ClocheError, OSError, ValueError, KeyError, TypeError, AttributeError,
                    RecursionError) as err:
                message = err.message if isinstance(err, ClocheError) else str(err)
                self.listener(ev.BuildWarning(f"cache import from {spec.source} failed, "
                                              f"going on without it: {message}"))
                continue
            self.sources.append(source)

    def _open_registry(self, spec: CacheSpec) -> _Source:
        from cloche.oci.reference import Reference

        assert spec.ref is not None
        ref = Reference.parse(spec.ref)
        client = self.client
        endpoints = client.config.endpoints(ref)
        last: ClocheError | None = None
        for ep in endpoints:
            try:
                client.ping(ep)
                top = client.get_manifest(ep)
            except ClocheError as err:
                last = err
                continue

            def fetch(blob: Blob, sink: Callable[[bytes], object], ep: Any = ep) -> None:
                client.fetch_blob(ep, blob.digest, blob.size, sink)

            def manifest(digest: Digest, ep: Any = ep) -> bytes:
                return bytes(client.get_manifest(ep, str(digest)).data)

            entries = _entries(top.data, _reader(fetch), manifest, self._platform())
            return _Source(spec.ref, entries, fetch)
        raise last or RegistryError(f"cannot reach {ref.registry}", reference=str(ref))

    def _open_local(self, spec: CacheSpec) -> _Source:
        assert spec.path is not None
        root = Path(spec.path)
        index = json.loads(_read_limited(root / "index.json", MAX_CONFIG))
        found = [m for m in index.get("manifests", []) if isinstance(m, dict)]
        named = [m for m in found if (m.get("annotations") or {}).get(_REF_NAME) == spec.tag]
        if not (named or found):
            raise ValueError(f"{root / 'index.json'} lists nothing")
        top = _blob((named or found)[0])

        def fetch(blob: Blob, sink: Callable[[bytes], object]) -> None:
            _read_local_blob(root, blob, sink)

        read = _reader(fetch)
        return _Source(spec.path, _entries(read(top), read, lambda d: read(
            Blob(d, MAX_CONFIG, "")), self._platform()), fetch)

    def _platform(self) -> Platform:
        """The build's platform: which image of a multi-platform cache index is read."""
        from cloche.oci.platform import Platform

        return Platform.parse(self.options.platform) if self.options.platform \
            else Platform.host()

    def lookup(self, key: str, cache: BuildCache, stage: int) -> tuple[CacheRecord, str] | None:
        """The step ``key`` of ``stage`` from the first source that has it and whose layer
        verifies, now a local cache record too; None: a miss everywhere."""
        for source in self.sources:
            entry = source.entries.get(key)
            if entry is None:
                continue
            try:
                record = self._import(source, entry, cache, defer=stage not in self.shipped)
            except (ClocheError, OSError, ValueError) as err:
                message = err.message if isinstance(err, ClocheError) else str(err)
                self.listener(ev.BuildWarning(
                    f"cache entry {key[:19]} of {source.name} does not verify; the step runs "
                    f"({message})"))
                continue
            with self._lock:
                source.hits += 1
            return record, source.name
        return None

    def _import(self, source: _Source, entry: Entry, cache: BuildCache, *,
                defer: bool) -> CacheRecord:
        """The local record of an imported step. Its layer is fetched now, or, ``defer``,
        when something first needs it (a step stacked on it or copying from it, an export):
        a stage the image is not made of may never need it."""
        if entry.layer is None or entry.diff_id is None:
            cache.put(entry.key, entry.created_by, None, None, entry.created)
            return CacheRecord(entry.created_by, None, None, entry.created)
        blobs = self.store.blobs
        diff_id = entry.diff_id
        layer: Layer
        if defer and not blobs.exists(diff_id):
            def produce() -> tuple[Digest, int, str]:
                self.fetch_layer(diff_id)
                return diff_id, blobs.size(diff_id), mt.OCI_LAYER_TAR

            with self._lock:
                self._pending.setdefault(diff_id, lambda: self._fetch(source, entry))
            layer = LazyLayer(diff_id, entry.layer.size, blobs, produce)
        else:
            self._fetch(source, entry)
            layer = Layer(diff_id, diff_id, blobs.size(diff_id), mt.OCI_LAYER_TAR, blobs)
        # the step's directory: empty, filled from the layer when a step needs its files
        base = self.store.snapshots_dir / "steps" / uuid.uuid4().hex
        upper = base / "upper"
        upper.mkdir(parents=True)
        atomic_write(base / PENDING_LAYER, str(diff_id).encode())
        cache.put(entry.key, entry.created_by, layer, upper, entry.created)
        return CacheRecord(entry.created_by, layer, upper, entry.created)

    def fetch_layer(self, diff_id: Digest) -> None:
        """Fetch the layer of a deferred import into the store (once; a LayerError when it
        does not verify: too late for a miss, the build fails rather than use it)."""
        with self._lock:
            fetch = self._pending.get(diff_id)
            lock = self._fetch_locks.setdefault(diff_id, threading.Lock())
        if fetch is None:
            return
        with lock:
            if self.store.blobs.exists(diff_id):
                return
            try:
                fetch()
            except (ClocheError, OSError, ValueError) as err:
                message = err.message if isinstance(err, ClocheError) else str(err)
                raise LayerError(f"layer {diff_id} of an imported cache step: {message}") \
                    from err

    def _fetch(self, source: _Source, entry: Entry) -> None:
        """The entry's layer into the store as a plain tar of its diff id, checked."""
        assert entry.layer is not None and entry.diff_id is not None
        blobs = self.store.blobs
        blob, diff_id = entry.layer, entry.diff_id
        if not blobs.exists(diff_id):
            # the bound of a pulled base layer (CLOCHE_MAX_LAYER_SIZE) on the blob and on the
            # tar it expands to: a hostile cache cannot fill the disk with a bomb
            limit = max_layer_size()
            if blob.size > (limit if blob.digest == diff_id else limit + limit // 64):
                raise _too_large(limit, blob.digest)
            if blob.digest == diff_id:  # an uncompressed cache: the blob is the tar
                with blobs.writer(expected=diff_id, size=blob.size) as w:
                    source.fetch(blob, w.write)
            else:
                fetched = not blobs.exists(blob.digest)
                if fetched:
                    with blobs.writer(expected=blob.digest, size=blob.size) as w:
                        source.fetch(blob, w.write)
                # the layer kept as a plain tar (as a build keeps its own), checked as the
                # config's diff id while it is written
                try:
                    with blobs.open(blob.digest) as raw, \
                            open_decompressed(raw) as tar, blobs.writer(expected=diff_id) as w:
                        written = 0
                        while chunk := tar.read(CHUNK):
                            written += len(chunk)
                            if written > limit:
                                raise _too_large(limit, blob.digest)
                            w.write(chunk)
                except LayerTooLargeError:
                    if fetched:
                        blobs.delete(blob.digest)  # the bomb itself goes too
                    raise
                kind = mt.layer_compression(blob.media_type) if mt.is_layer(blob.media_type) \
                    else ""
                if kind in ("gzip", "zstd"):  # a push of this layer sends the blob fetched
                    from cloche.store.compressed import remember_twin

                    remember_twin(self.store, diff_id, Compression(kind), blob.digest, blob.size)

    # -- export ------------------------------------------------------------------------

    def note(self, stage: int, key: str, parent: str, created_by: str, created: str | None,
             layer: Layer | None) -> None:
        """A step of this build (run, cached or imported), for ``--cache-to``."""
        if not self.options.cache_to:
            return
        with self._lock:
            self._notes.setdefault(key, _Noted(stage, key, parent, created_by, created, layer))

    def _records(self, spec: CacheSpec, shipped: frozenset[int]) -> list[_Noted]:
        with self._lock:
            notes = list(self._notes.values())
        return [n for n in notes if spec.mode == "max" or n.stage in shipped]

    def inline(self, image: Image, shipped: frozenset[int]) -> Image:
        """``image`` with an inline cache config (``type=inline``) in its config, its layers
        named by their index in the image."""
        spec = next((s for s in self.options.cache_to if s.type == "inline"), None)
        if spec is None:
            return image
        index = {layer.diff_id: i for i, layer in reversed(list(enumerate(image.layers)))}
        records = []
        for n in self._records(spec, shipped):
            meta: dict[str, object] | None = None
            if n.layer is not None:
                if n.layer.diff_id not in index:
                    continue
                meta = {"index": index[n.layer.diff_id], "diff_id": str(n.layer.diff_id)}
            records.append(_record(n, meta))
        config = image.config
        extra = dict(config.extra)
        extra[INLINE_KEY] = json.dumps({"format": FORMAT, "records": records},
                                       sort_keys=True, separators=(",", ":"))
        self.exported.append({"type": "inline", "steps": len(records)})
        return Image.from_config(config.replace(extra=extra), image.layers)

    def export(self, shipped: frozenset[int]) -> None:
        """Write every ``--cache-to`` but inline (done in the image by ``inline``)."""
        for spec in self.options.cache_to:
            if spec.type == "inline":
                continue
            try:
                self._export_one(spec, shipped)
            except (ClocheError, OSError) as err:
                if not spec.ignore_error:
                    raise
                message = err.message if isinstance(err, ClocheError) else str(err)
                self.listener(ev.BuildWarning(f"cache export to {spec.source} failed "
                                              f"(ignore-error=true): {message}"))

    def _export_one(self, spec: CacheSpec, shipped: frozenset[int]) -> None:
        from cloche.store.compressed import compressed_layer

        layers: dict[Digest, Layer] = {}
        records = []
        notes = self._records(spec, shipped)
        for n in notes:
            meta: dict[str, object] | None = None
            if n.layer is not None:
                if spec.compression == "uncompressed":
                    out = n.layer  # a plain tar (a lazy one is written now)
                else:
                    out = compressed_layer(self.store, n.layer, Compression(spec.compression))
                layers.setdefault(out.digest, out)
                meta = {"digest": str(out.digest), "diff_id": str(n.layer.diff_id)}
            records.append(_record(n, meta))
        config = json.dumps({"format": FORMAT, "records": records}, sort_keys=True,
                            separators=(",", ":")).encode()
        config_blob = Blob(Digest.from_bytes(config), len(config), CACHE_CONFIG)
        descs = [_desc(Blob(x.digest, x.size, x.media_type)) for x in layers.values()]
        if spec.image_manifest:
            top: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                                   "artifactType": CACHE_CONFIG, "config": _desc(config_blob),
                                   "layers": descs}
        else:
            top = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                   "manifests": descs + [_desc(config_blob)]}
        data = json.dumps(top, sort_keys=True, separators=(",", ":")).encode()
        sources: dict[Digest, tuple[int, Callable[[], BinaryIO]]] = {
            d: (x.size, _opener(x)) for d, x in layers.items()}
        sources[config_blob.digest] = (len(config), _bytes_opener(config))
        if spec.type == "local":
            assert spec.path is not None
            digest = _write_layout(Path(spec.path), spec.tag, sources, data, top["mediaType"])
            where = {"dest": spec.path}
        else:
            assert spec.ref is not None
            digest = self._push(spec.ref, sources, data, top["mediaType"])
            where = {"ref": spec.ref}
        self.exported.append({"type": spec.type, **where, "mode": spec.mode,
                              "digest": str(digest), "mediaType": top["mediaType"],
                              "steps": len(records), "layers": len(layers)})

    def _push(self, reference: str, sources: dict[Digest, tuple[int, Callable[[], BinaryIO]]],
              data: bytes, media_type: str) -> Digest:
        """Blobs the registry lacks, then the artifact's manifest or index under its tag."""
        from cloche.oci.reference import Reference

        ref = Reference.parse(reference)
        client = self.client
        endpoints = client.config.push_endpoints(ref)
        ep = None
        for i, candidate in enumerate(endpoints):
            try:
                client.ping(candidate)
                ep = candidate
                break
            except RegistryError as err:
                if err.status is not None or i == len(endpoints) - 1:
                    raise
        assert ep is not None
        for digest, (size, opener) in sources.items():
            if not client.blob_exists(ep, digest):
                client.upload_blob(ep, digest, size, opener)
        return Digest.parse(str(client.put_manifest(ep, ref.identifier, data, media_type)))

    def imported(self) -> list[dict[str, object]]:
        return [{"source": s.name, "steps": s.hits} for s in self.sources]


def _record(n: _Noted, layer: dict[str, object] | None) -> dict[str, object]:
    return {"key": n.key, "parent": n.parent, "created_by": n.created_by,
            "created": n.created, "layer": layer}


def _entries(top_data: bytes, read: Callable[[Blob], bytes],
             manifest: Callable[[Digest], bytes], platform: Any) -> dict[str, Entry]:
    """The entries of a cache artifact (an index or a manifest naming the cache config) or
    of an image that carries an inline cache (an index is resolved for ``platform``)."""
    doc = json.loads(top_data)
    if not isinstance(doc, dict):
        raise ValueError("the manifest is not an object")
    if "manifests" in doc:
        descs = [_blob(d) for d in doc["manifests"]]
        configs = [d for d in descs if d.media_type == CACHE_CONFIG]
        if configs:
            return parse_config(read(configs[0]), {d.digest: d for d in descs
                                                   if d.media_type != CACHE_CONFIG})
        # an image index: the platform's image, for an inline cache
        chosen = None
        for raw in doc["manifests"]:
            p = raw.get("platform") or {}
            if p.get("os") == platform.os and p.get("architecture") == platform.architecture:
                chosen = _blob(raw)
                break
        if chosen is None:
            raise ValueError(f"no cache config, and no image for {platform}")
        data = manifest(chosen.digest)
        if Digest.from_bytes(data) != chosen.digest:
            raise ValueError(f"manifest {chosen.digest} does not match its digest")
        return _entries(data, read, manifest, platform)
    config = _blob(doc["config"])
    layers = [_blob(d) for d in doc.get("layers", [])]
    if config.media_type == CACHE_CONFIG:
        return parse_config(read(config), {d.digest: d for d in layers})
    image_config = json.loads(read(config))
    inline = image_config.get(INLINE_KEY) if isinstance(image_config, dict) else None
    if not isinstance(inline, str):
        raise ValueError("neither a cache artifact nor an image with an inline cache")
    diff_ids = tuple(Digest.parse(d) for d in image_config["rootfs"]["diff_ids"])
    if len(diff_ids) != len(layers):
        raise ValueError("the image's layers and diff ids do not match")
    return parse_config(inline.encode(), layers, diff_ids)


def _read_limited(path: Path, limit: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path} is larger than {limit} bytes")
    return data


def _blob_path(root: Path, digest: Digest) -> Path:
    return root / "blobs" / digest.algorithm / digest.hex


def _reader(fetch: Callable[[Blob, Callable[[bytes], object]], None]
            ) -> Callable[[Blob], bytes]:
    """A reader of a source's small blobs (manifests, the cache config): whole, bounded."""
    def read(blob: Blob) -> bytes:
        if blob.size > MAX_CONFIG:
            raise ValueError(f"cache config {blob.digest} is too large")
        parts: list[bytes] = []
        fetch(blob, parts.append)
        return b"".join(parts)

    return read


def _read_local_blob(root: Path, blob: Blob, sink: Callable[[bytes], object]) -> None:
    """A blob of the layout at ``root`` into ``sink``, refused unless it is a regular file of
    the digest (and no bigger than the size) named."""
    import stat

    fd = os.open(_blob_path(root, blob.digest), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                 | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError(f"blob {blob.digest} is not a regular file")
        digester = Digester(blob.digest.algorithm)
        while chunk := f.read(CHUNK):
            digester.update(chunk)
            if digester.size > blob.size:
                raise ValueError(f"blob {blob.digest} is larger than named")
            sink(chunk)
    if digester.digest() != blob.digest:
        raise ValueError(f"blob {blob.digest} holds other bytes ({digester.digest()})")


def _opener(layer: Layer) -> Callable[[], BinaryIO]:
    return lambda: layer.source.open(layer.digest)


def _bytes_opener(data: bytes) -> Callable[[], BinaryIO]:
    import io

    return lambda: io.BytesIO(data)


def _write_layout(root: Path, tag: str, sources: dict[Digest, tuple[int, Callable[[], BinaryIO]]],
                  data: bytes, media_type: str) -> Digest:
    """The artifact as an OCI layout in ``root``, updated in place: the blobs it lacks, then
    ``index.json`` (the entry of ``tag`` replaced) by rename; blobs no entry reaches go."""
    digest = Digest.from_bytes(data)
    try:
        folder = root / "blobs" / "sha256"
        folder.mkdir(parents=True, exist_ok=True)
        layout = root / "oci-layout"
        if not layout.exists():
            atomic_write(layout, json.dumps({"imageLayoutVersion": mt.OCI_LAYOUT_VERSION}).encode())
        all_blobs = dict(sources)
        all_blobs[digest] = (len(data), _bytes_opener(data))
        for d, (size, opener) in all_blobs.items():
            path = _blob_path(root, d)
            try:
                if os.lstat(path).st_size == size:
                    continue  # by name: a reader verifies the bytes
            except FileNotFoundError:
                pass
            tmp = path.with_name(f".tmp-{uuid.uuid4().hex}")
            with opener() as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            os.replace(tmp, path)
        index_path = root / "index.json"
        try:
            old = json.loads(_read_limited(index_path, MAX_CONFIG)).get("manifests", [])
        except (OSError, ValueError, AttributeError):
            old = []
        kept = [m for m in old if isinstance(m, dict)
                and (m.get("annotations") or {}).get(_REF_NAME) != tag]
        entry = {"mediaType": media_type, "digest": str(digest), "size": len(data),
                 "annotations": {_REF_NAME: tag}}
        manifests = kept + [entry]
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
        atomic_write(index_path, json.dumps(index, indent=2, sort_keys=True).encode())
        _sweep_layout(root, manifests)
    except OSError as err:
        raise ConfigError(f"--cache-to type=local,dest={root}: cannot write the cache "
                          f"({err.strerror or err})") from err
    return digest


def _sweep_layout(root: Path, entries: Iterable[dict[str, Any]]) -> None:
    """Remove the sha256 blobs of ``root`` that no entry of its index reaches (so a folder a
    CI job saves does not grow with every build); nothing when an entry cannot be read or is
    not a cache artifact (a folder shared with images keeps everything)."""
    reached: set[str] = set()
    for entry in entries:
        try:
            top = _blob(entry)
            reached.add(top.digest.hex)
            doc = json.loads(_read_limited(_blob_path(root, top.digest), MAX_CONFIG))
            descs = [_blob(d) for d in doc.get("manifests", []) + doc.get("layers", [])
                     + ([doc["config"]] if "config" in doc else [])]
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError,
                ClocheError):
            return
        if not any(d.media_type == CACHE_CONFIG for d in descs):
            return
        reached.update(d.digest.hex for d in descs)
    folder = root / "blobs" / "sha256"
    for name in os.listdir(folder):
        if len(name) == 64 and all(c in "0123456789abcdef" for c in name) \
                and name not in reached:
            (folder / name).unlink(missing_ok=True)


__all__ = ["CACHE_CONFIG", "FORMAT", "INLINE_KEY", "RemoteCache", "parse_config"]
