"""What the build cache holds (``cloche du``) and giving the space back (``cloche prune``).

The cache is: step records (``cache/steps``), the overlay directories of the steps they
point at (``snapshots/steps``), flattened base images (``snapshots/images``), RUN cache mounts
(``cache/mounts``) and layer blobs that only records reference. Pruning deletes records
(by default those whose layer is in no stored image, with ``all`` every one; ``until`` keeps
those used more recently; ``keep_storage`` deletes the least recently used first until the
cache fits), then whatever no remaining record or image needs, then unreferenced blobs.
Running builds hold a store lease; pruning waits for them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from cloche.engine.scratch import sweep_stale
from cloche.fs.rmtree import rmtree
from cloche.fs.usage import tree_blocks
from cloche.oci.digest import Digest
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


@dataclass(frozen=True)
class DiskUsage:
    images: int
    image_bytes: int
    records: int
    cache_layer_bytes: int  # layer blobs only the cache references
    step_snapshot_bytes: int
    base_snapshot_bytes: int
    cache_mount_bytes: int

    @property
    def cache_bytes(self) -> int:
        return (self.cache_layer_bytes + self.step_snapshot_bytes + self.base_snapshot_bytes
                + self.cache_mount_bytes)

    def to_dict(self) -> dict[str, int]:
        out = dict(self.__dict__)
        out["cache_bytes"] = self.cache_bytes
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
            out.append(CacheEntry(path, path.stat().st_mtime,
                                  Digest.parse(layer["digest"]) if layer and "digest" in layer
                                  else None,  # no digest: a blob never written (lazy layer)
                                  int(layer.get("size", 0)) if layer else 0, snapshot))
        except (OSError, ValueError, KeyError, TypeError):
            out.append(CacheEntry(path, 0.0, None, 0, None))  # corrupt: prunable
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


def disk_usage(store: Store) -> DiskUsage:
    image_blobs = _image_blobs(store)
    image_bytes = sum(store.blobs.size(d) for d in image_blobs if store.blobs.exists(d))
    entries = _entries(store)
    cache_only = {e.layer for e in entries if e.layer and e.layer not in image_blobs}
    return DiskUsage(
        images=len(store.list_images()), image_bytes=image_bytes, records=len(entries),
        cache_layer_bytes=sum(store.blobs.size(d) for d in cache_only if store.blobs.exists(d)),
        step_snapshot_bytes=tree_size(store.snapshots_dir / "steps"),
        base_snapshot_bytes=tree_size(store.snapshots_dir / "images"),
        cache_mount_bytes=tree_size(store.cache_dir / "mounts"))


def prune(store: Store, *, everything: bool = False, until: float | None = None,
          keep_storage: int | None = None) -> PruneReport:
    """Delete build cache as described in the module docstring; returns what it freed."""
    before = disk_usage(store).cache_bytes
    removed = 0
    with locked(store.gc_lock):  # waits for running builds (they hold leases)
        image_blobs = _image_blobs(store)
        entries = sorted(_entries(store), key=lambda e: e.last_used)
        now = time.time()
        doomed = []
        for entry in entries:
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
        for entry in doomed:
            entry.path.unlink(missing_ok=True)
            removed += 1
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
    after = disk_usage(store).cache_bytes
    return PruneReport(removed, max(0, before - after))
