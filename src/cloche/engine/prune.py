"""What the build cache holds (``cloche du``) and giving the space back (``cloche prune``).

The cache is: step records (``cache/steps``), the overlay directories of the steps they
point at (``snapshots/steps``), flattened base images (``snapshots/images``), RUN cache mounts
(``cache/mounts``), layer blobs that only records reference, and the layers rewritten for
``rewrite-timestamp`` that no image holds (``rewritten/``, engine/reproducible.py). Pruning
deletes records (by default those whose layer is in no stored image, with ``all`` every one;
``until`` keeps those used more recently; ``keep_storage`` deletes the least recently used
first until the cache fits; a record that can never hit goes whatever the options: a step
imported from a remote cache whose layer was never fetched, whose directory is only a marker
to unpack from it), then whatever no remaining record or image needs (step directories no
record names, e.g. those of imports done again by later builds), then unreferenced blobs and
the rewrite records whose blob went with them. Running builds hold a store lease; pruning
waits for them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloche.engine.scratch import sweep_stale
from cloche.engine.workspace import PENDING_LAYER
from cloche.fs.rmtree import rmtree
from cloche.fs.usage import tree_blocks
from cloche.oci.digest import Digest
from cloche.oci.image import Layer
from cloche.store import Store, locked


def tree_size(path: Path) -> int:
    """Bytes used under ``path`` (allocated blocks; links not followed; any depth)."""
    return tree_blocks(path)


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    last_used: float
    layer: Digest | None
    size: int
    snapshot: Path | None
    dead: bool = False  # can never be a hit (BuildCache.get would miss): pruned in any mode


@dataclass(frozen=True)
class ImageUsage:
    """One image of ``cloche du -v`` (``docker system df -v``): one row per name, as
    ``cloche images``; sizes are its layers' files, as there (None: not readable here)."""

    name: str | None
    image_id: str
    created: str | None
    size: int | None
    shared_size: int | None  # of its layers, those another stored image has too
    active: bool  # named, or a base image the build cache keeps flattened

    def to_dict(self) -> dict[str, Any]:
        unique = None if self.size is None or self.shared_size is None \
            else self.size - self.shared_size
        return {"Name": self.name, "ID": self.image_id, "CreatedAt": self.created,
                "Size": self.size, "SharedSize": self.shared_size, "UniqueSize": unique,
                "Active": self.active}


@dataclass(frozen=True)
class CacheUsage:
    """One build cache entry of ``cloche du -v``: a step record (``regular``), a base
    image's flattened snapshot (``source.image``) or a RUN cache mount (``exec.cachemount``)."""

    id: str
    type: str
    size: int  # its directory, and its layer blob when no image holds it
    last_used: float
    shared: bool  # a step whose layer an image holds (its blob is counted with the images)
    active: bool  # what ``cloche prune`` (without --all) keeps
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ID": self.id, "Type": self.type, "Size": self.size,
                "LastUsed": self.last_used, "Shared": self.shared, "Active": self.active,
                "Description": self.description}


@dataclass(frozen=True)
class DiskUsage:
    images: int
    image_bytes: int
    records: int
    cache_layer_bytes: int  # layer blobs only the cache references
    step_snapshot_bytes: int
    base_snapshot_bytes: int
    cache_mount_bytes: int
    step_snapshots: int = 0  # step directories (more than records: those no record names)
    rewritten_layers: int = 0  # rewrite records whose blob no image holds (prune drops them)
    rewritten_bytes: int = 0  # those blobs
    # ``docker system df``'s rows (README, ``cloche du``): images by ID, ...
    image_total: int = 0
    image_active: int = 0  # named, or a base the build cache keeps flattened
    image_size: int = 0  # the files of every layer, each layer once (``cloche images``)
    image_reclaimable: int = 0  # of those, the layers only inactive images hold
    # ... and build cache entries: step records, base snapshots, cache mounts
    cache_total: int = 0
    cache_active: int = 0  # what ``cloche prune`` keeps
    cache_reclaimable: int = 0  # what ``cloche prune`` frees (of ``cache_bytes``)
    verbose: bool = field(default=False, repr=False)  # with the rows below
    image_rows: tuple[ImageUsage, ...] = field(default=(), repr=False)
    cache_rows: tuple[CacheUsage, ...] = field(default=(), repr=False)

    @property
    def cache_bytes(self) -> int:
        return (self.cache_layer_bytes + self.step_snapshot_bytes + self.base_snapshot_bytes
                + self.cache_mount_bytes + self.rewritten_bytes)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in self.__dict__.items()
                               if k not in ("verbose", "image_rows", "cache_rows")}
        out["cache_bytes"] = self.cache_bytes
        out["system_df"] = [
            {"Type": "Images", "TotalCount": self.image_total, "Active": self.image_active,
             "Size": self.image_size, "Reclaimable": self.image_reclaimable},
            {"Type": "Build Cache", "TotalCount": self.cache_total, "Active": self.cache_active,
             "Size": self.cache_bytes, "Reclaimable": self.cache_reclaimable}]
        if self.verbose:
            out["image_usage"] = [row.to_dict() for row in self.image_rows]
            out["cache_usage"] = [row.to_dict() for row in self.cache_rows]
        return out


@dataclass(frozen=True)
class PruneReport:
    records_removed: int
    bytes_freed: int


def _entries(store: Store) -> list[CacheEntry]:
    root = store.cache_dir / "steps"
    out = []
    for path in sorted(root.glob("*/*.json")) if root.is_dir() else []:
        try:
            doc = json.loads(path.read_bytes())
            layer = doc.get("layer")
            snapshot = store.root / doc["snapshot"] if layer else None
            digest = Digest.parse(layer["digest"]) if layer and "digest" in layer \
                else None  # no digest: a blob never written (lazy layer)
            # a lazily imported step never fetched: only its layer could fill the directory
            dead = snapshot is not None and (not snapshot.is_dir() or digest is None and (
                snapshot.parent / PENDING_LAYER).exists())
            out.append(CacheEntry(path, path.stat().st_mtime, digest,
                                  int(layer.get("size", 0)) if layer else 0, snapshot, dead))
        except (OSError, ValueError, KeyError, TypeError):
            out.append(CacheEntry(path, 0.0, None, 0, None, True))  # corrupt
    return out


def _image_blobs(store: Store) -> set[Digest]:
    """Every blob a named or stored image reaches."""
    live: set[Digest] = set()
    pending = [d.digest for _, d in store.names()]
    pending += [img.descriptor.digest for img in store.list_images()]
    while pending:
        digest = pending.pop()
        if digest in live:
            continue
        live.add(digest)
        pending.extend(store._children(digest))
    return live


def _count_dirs(path: Path) -> int:
    try:
        with os.scandir(path) as it:
            return sum(1 for e in it if e.is_dir(follow_symlinks=False))
    except OSError:
        return 0


def disk_usage(store: Store, *, verbose: bool = False,
               layer_size: Callable[[Layer], int] | None = None, df: bool = True) -> DiskUsage:
    """What the store holds; with ``df`` also ``docker system df``'s rows (``layer_size``:
    how an image layer is measured, its blob's size by default; cloche.api passes the files'
    size ``cloche images`` shows), with ``verbose`` every image and cache entry."""
    from cloche.engine.reproducible import rewritten_blobs

    image_blobs = _image_blobs(store)
    image_bytes = sum(store.blobs.size(d) for d in image_blobs if store.blobs.exists(d))
    entries = _entries(store)
    cache_only = {e.layer for e in entries if e.layer and e.layer not in image_blobs}
    rewritten = [d for d in rewritten_blobs(store)
                 if d is None or (d not in image_blobs and d not in cache_only)]
    rewritten_set = {d for d in rewritten if d is not None}
    usage = DiskUsage(
        images=len(store.list_images()), image_bytes=image_bytes, records=len(entries),
        cache_layer_bytes=sum(store.blobs.size(d) for d in cache_only if store.blobs.exists(d)),
        step_snapshot_bytes=tree_size(store.snapshots_dir / "steps"),
        base_snapshot_bytes=tree_size(store.snapshots_dir / "images"),
        cache_mount_bytes=tree_size(store.cache_dir / "mounts"),
        step_snapshots=_count_dirs(store.snapshots_dir / "steps"),
        rewritten_layers=len(rewritten),
        rewritten_bytes=sum(store.blobs.size(d) for d in rewritten_set
                            if store.blobs.exists(d)))
    if not df:
        return usage
    return _system_df(store, usage, entries, image_blobs, cache_only, verbose,
                      layer_size or (lambda layer: layer.size))


def _doomed(entries: list[CacheEntry], image_blobs: set[Digest], everything: bool,
            until: float | None, keep_storage: int | None) -> list[CacheEntry]:
    """The records ``prune`` deletes, of ``entries`` (least recently used first)."""
    now = time.time()
    doomed = []
    for entry in entries:
        if entry.dead:
            doomed.append(entry)
            continue
        if until is not None and now - entry.last_used < until:
            continue
        if everything or entry.layer is None or entry.layer not in image_blobs:
            doomed.append(entry)
    if keep_storage is not None:
        kept = [e for e in entries if e not in doomed]
        total = sum(e.size for e in kept)
        for entry in kept:  # least recently used first
            if total <= keep_storage:
                break
            doomed.append(entry)
            total -= entry.size
    return doomed


def _dirs(path: Path, *, every: bool = False) -> list[Path]:
    """The folders in ``path`` (``every``: whatever is there, as ``prune`` sweeps it)."""
    try:
        with os.scandir(path) as it:
            return sorted(Path(e.path) for e in it if every or (
                e.is_dir(follow_symlinks=False) and not e.name.startswith(".")))
    except OSError:
        return []


def _dir_size(path: Path) -> int:
    """What deleting the folder ``path`` frees: what is under it and the folder itself."""
    try:
        own = path.lstat().st_blocks * 512
    except OSError:
        own = 0
    return own + tree_size(path)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _system_df(store: Store, usage: DiskUsage, entries: list[CacheEntry],
               image_blobs: set[Digest], cache_only: set[Digest], verbose: bool,
               layer_size: Callable[[Layer], int]) -> DiskUsage:
    """``usage`` with ``docker system df``'s rows: what ``prune`` (without options) would
    free is worked out as ``prune`` chooses (``_doomed``), nothing deleted."""
    from dataclasses import replace

    ordered = sorted(entries, key=lambda e: e.last_used)
    doomed = {e.path for e in _doomed(ordered, image_blobs, False, None, None)}
    remaining = [e for e in entries if e.path not in doomed]
    kept_layers = {e.layer for e in remaining if e.layer and e.layer not in image_blobs}
    freed = sum(store.blobs.size(d) for d in cache_only - kept_layers
                if store.blobs.exists(d))
    wanted = {e.snapshot.parent for e in remaining if e.snapshot is not None}
    step_dirs = {d: _dir_size(d) for d in _dirs(store.snapshots_dir / "steps", every=True)}
    freed += sum(size for d, size in step_dirs.items() if d not in wanted)
    stored = {img.descriptor.digest.hex for img in store.list_images()}
    snaps = _dirs(store.snapshots_dir / "images", every=True)
    snap_sizes = {d: _dir_size(d) for d in snaps}
    freed += sum(size for d, size in snap_sizes.items() if d.name not in stored)
    freed += usage.rewritten_bytes  # gc takes every blob no image nor record holds
    mounts = _dirs(store.cache_dir / "mounts")
    images = _image_usage(store, entries, layer_size,
                          {d.name for d in snaps}, verbose)
    cache_rows: list[CacheUsage] = []
    if verbose:
        for e in entries:
            size = step_dirs.get(e.snapshot.parent, 0) if e.snapshot is not None else 0
            if e.layer is not None and e.layer not in image_blobs and store.blobs.exists(e.layer):
                size += store.blobs.size(e.layer)
            cache_rows.append(CacheUsage(
                e.path.stem[:12], "regular", size, e.last_used,
                e.layer is not None and e.layer in image_blobs, e.path not in doomed,
                _created_by(e.path)))
        cache_rows += [CacheUsage(d.name[:12], "source.image", snap_sizes[d], _mtime(d),
                                  False, d.name in stored) for d in snaps]
        cache_rows += [CacheUsage(d.name[:12], "exec.cachemount", _dir_size(d), _mtime(d),
                                  False, True) for d in mounts]
    return replace(
        usage, image_total=images[0], image_active=images[1], image_size=images[2],
        image_reclaimable=images[3],
        cache_total=len(entries) + len(snaps) + len(mounts),
        cache_active=len(remaining) + sum(1 for d in snaps if d.name in stored) + len(mounts),
        cache_reclaimable=freed, verbose=verbose, image_rows=images[4],
        cache_rows=tuple(cache_rows))


def _created_by(path: Path) -> str:
    try:
        doc = json.loads(path.read_bytes())
        return str(doc.get("created_by", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def _image_usage(store: Store, entries: list[CacheEntry], layer_size: Callable[[Layer], int],
                 snapshots: set[str], verbose: bool
                 ) -> tuple[int, int, int, int, tuple[ImageUsage, ...]]:
    """Images by ID: how many, how many active (named, or a base the cache keeps flattened),
    the size of every layer once, what only inactive images hold; with ``verbose`` a row per
    entry (size and shared size as ``docker system df -v``)."""
    from cloche.errors import ClocheError
    from cloche.store.images import load_image

    listed = store.list_images()
    active: set[str] = set()
    layers_of: dict[str, tuple[Layer, ...]] = {}
    created: dict[str, str | None] = {}
    for entry in listed:
        iid = str(entry.image_id)
        if entry.name is not None or entry.descriptor.digest.hex in snapshots:
            active.add(iid)
        if iid in layers_of:
            continue
        try:
            image = load_image(store, entry.descriptor)
        except ClocheError:
            continue  # an index without this platform, or missing blobs: not measured
        layers_of[iid] = image.layers
        created[iid] = image.config.created
    users: dict[Digest, set[str]] = {}
    sizes: dict[Digest, int] = {}
    blobs: dict[Digest, set[Digest]] = {}
    for iid, layers in layers_of.items():
        for layer in layers:
            users.setdefault(layer.diff_id, set()).add(iid)
            blobs.setdefault(layer.diff_id, set()).add(layer.digest)
            if layer.diff_id not in sizes:
                try:
                    sizes[layer.diff_id] = layer_size(layer)
                except (ClocheError, OSError):
                    sizes[layer.diff_id] = 0
    held = {e.layer for e in entries if e.layer is not None}
    reclaimable = sum(size for d, size in sizes.items()
                      if not users[d] & active and not blobs[d] & held)
    rows: list[ImageUsage] = []
    for entry in listed if verbose else []:
        iid = str(entry.image_id)
        own = layers_of.get(iid)
        size = shared = None
        if own is not None:
            size = sum(sizes[x.diff_id] for x in own)
            shared = sum(sizes[x.diff_id] for x in own if users[x.diff_id] - {iid})
        rows.append(ImageUsage(entry.name, iid, created.get(iid), size, shared, iid in active))
    total = len({str(e.image_id) for e in listed})
    return total, len(active), sum(sizes.values()), reclaimable, tuple(rows)


def prune(store: Store, *, everything: bool = False, until: float | None = None,
          keep_storage: int | None = None) -> PruneReport:
    """Delete build cache as described in the module docstring; returns what it freed."""
    before = disk_usage(store, df=False).cache_bytes
    removed = 0
    with locked(store.gc_lock):  # waits for running builds (they hold leases)
        image_blobs = _image_blobs(store)
        entries = sorted(_entries(store), key=lambda e: e.last_used)
        doomed = _doomed(entries, image_blobs, everything, until, keep_storage)
        for entry in doomed:
            entry.path.unlink(missing_ok=True)
            removed += 1
            try:
                entry.path.parent.rmdir()  # its shard folder, once empty
            except OSError:
                pass
        remaining = _entries(store)
        wanted = {e.snapshot.parent for e in remaining if e.snapshot is not None}
        steps = store.snapshots_dir / "steps"
        for step in steps.iterdir() if steps.is_dir() else []:
            if step not in wanted:
                rmtree(step, ignore_errors=True)
        stored = {img.descriptor.digest.hex for img in store.list_images()}
        images = store.snapshots_dir / "images"
        for snap in images.iterdir() if images.is_dir() else []:
            if everything or snap.name not in stored:
                rmtree(snap, ignore_errors=True)
        if everything:
            rmtree(store.cache_dir / "mounts", ignore_errors=True)
        sweep_stale(store, thorough=True)  # killed builds' scratch, cgroups, old secrets
        roots = [e.layer for e in remaining if e.layer is not None]
    store.gc(grace_seconds=0, extra_roots=roots)
    from cloche.store.compressed import forget_missing

    forget_missing(store)  # compressed twins gc removed
    from cloche.engine.reproducible import forget_missing_rewrites

    forget_missing_rewrites(store)  # rewritten layers gc removed
    after = disk_usage(store, df=False).cache_bytes
    return PruneReport(removed, max(0, before - after))
