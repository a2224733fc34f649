"""The build cache: one record per step key, and a stat cache that spares re-reading files.

A record says what a step produced: its history line, its layer and the overlay directory
holding the same change (the snapshot), or that it produced no layer. The layer is its diff id
and, once something needed it, its blob in the store: a layer whose blob was never written
(a stage no output shipped, see workspace.py) comes back as a ``LazyLayer`` of the snapshot,
and the record gains the blob's digest when that layer is first written, so the blob is
written once for every later build. Records are small JSON files written under a temporary
name and renamed, so a killed build leaves either the whole record or none; a record whose
blob or directory is gone is a miss, never a wrong result.

Snapshots are written through volatile overlays (never synced, see sandbox/overlay.py), so a
record names the boot that wrote it. After a reboot (a crash may have lost unsynced files) a
record is trusted only as far as its layer blob, which the store syncs: the snapshot is
emptied and marked to be unpacked again from that blob (``Workspace.unpack``), and a record
whose layer was never written (a lazy layer) is a miss.

The stat cache maps a context file's path to (device, inode, size, mtime, ctime) and the hash
of its content: an unchanged file is never read again, a touched file is re-read (and, its
content being the same, keeps its cache key).
"""

from __future__ import annotations

import functools
import hashlib
import json
import marshal
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloche.compression import Compression
from cloche.engine.workspace import LOCAL_LAYERS, PENDING_LAYER, lazy_layer, pending_layer
from cloche.fs.rmtree import rmtree
from cloche.oci.digest import Digest
from cloche.oci.image import Layer, LazyLayer
from cloche.store import Store, atomic_write, locked


@dataclass(frozen=True)
class CacheRecord:
    created_by: str
    layer: Layer | None
    snapshot: Path | None
    created: str | None = None


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)


class BuildCache:
    """Step records under ``<store>/cache/steps``."""

    def __init__(self, store: Store, compression: Compression = LOCAL_LAYERS) -> None:
        self.store = store
        self.compression = compression  # of the blobs written for lazy layers
        self.root = store.cache_dir / "steps"

    def _path(self, key: str) -> Path:
        hexpart = key.split(":", 1)[-1]
        return self.root / hexpart[:2] / f"{hexpart}.json"

    def get(self, key: str) -> CacheRecord | None:
        try:
            doc = json.loads(self._path(key).read_bytes())
            created_by = doc["created_by"]
            if doc.get("layer") is None:
                return CacheRecord(created_by, None, None, None)
            meta = doc["layer"]
            snapshot = self.store.root / doc["snapshot"]
            if not snapshot.is_dir():
                return None
            diff_id = Digest.parse(meta["diff_id"])
            earlier_boot = doc.get("boot") != boot_id()
            if earlier_boot and meta.get("digest") is None:
                return None  # files maybe lost in a crash, and no blob to restore them from
            layer: Layer
            if meta.get("digest") is None:  # never written: written from the snapshot
                if (snapshot.parent / PENDING_LAYER).exists():
                    return None  # only a layer can fill that directory, and there is none
                layer = lazy_layer(self.store, snapshot, diff_id, int(meta["tar_size"]),
                                   self.compression)
                self._record_blob_when_written(key, doc, layer)
            else:
                digest = Digest.parse(meta["digest"])
                if not self.store.blobs.exists(digest):
                    return None
                if (snapshot.parent / PENDING_LAYER).exists() \
                        and pending_layer(snapshot) != digest:
                    return None  # a step directory still to unpack, from a layer it cannot name
                if earlier_boot:
                    _restore_from_blob(snapshot, digest)
                    _write(self._path(key), json.dumps({**doc, "boot": boot_id()},
                                                       sort_keys=True).encode())
                layer = Layer(digest, diff_id, int(meta["size"]), meta["media_type"],
                              self.store.blobs)
                self.store.blobs.touch(digest)
            os.utime(self._path(key))
            return CacheRecord(created_by, layer, snapshot, doc.get("created"))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing or corrupt: a miss

    def put(self, key: str, created_by: str, layer: Layer | None, snapshot: Path | None,
            created: str | None = None) -> None:
        doc: dict[str, object] = {"key": key, "created_by": created_by, "layer": None,
                                  "created": created, "boot": boot_id()}
        if layer is not None and snapshot is not None:
            doc["snapshot"] = str(snapshot.relative_to(self.store.root))
            if isinstance(layer, LazyLayer) and not layer.materialized:
                doc["layer"] = {"diff_id": str(layer.diff_id), "tar_size": layer.tar_size}
                _write(self._path(key), json.dumps(doc, sort_keys=True).encode())
                self._record_blob_when_written(key, doc, layer)
                return
            doc["layer"] = _layer_meta(layer)
        _write(self._path(key), json.dumps(doc, sort_keys=True).encode())

    def _record_blob_when_written(self, key: str, doc: dict[str, object], layer: Layer) -> None:
        """Once the lazy ``layer``'s blob exists, name it in the record (``doc``) of ``key``."""
        if not isinstance(layer, LazyLayer):
            return

        def written(done: Layer) -> None:
            try:
                _write(self._path(key), json.dumps({**doc, "layer": _layer_meta(done)},
                                                   sort_keys=True).encode())
            except OSError:
                pass  # the record stays without its blob: a later export writes it again

        layer.when_written(written)

    def records(self) -> list[Path]:
        return sorted(self.root.glob("*/*.json")) if self.root.is_dir() else []


@functools.cache
def boot_id() -> str:
    """This boot's identity (the kernel's random boot id): snapshots of another boot may have
    lost files that were never synced."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def _restore_from_blob(snapshot: Path, digest: Digest) -> None:
    """Empty ``snapshot`` and mark it to be unpacked from the layer ``digest`` on first use
    (under the lock ``Workspace.unpack`` takes; the old files go by rename first)."""
    with locked(snapshot.parent / ".lock"):
        if pending_layer(snapshot) == digest:
            return  # another build did it
        # named as Workspace.unpack's scratch, which it sweeps should this be killed here
        stale = snapshot.parent / f"unpacking-stale-{os.getpid()}-{threading.get_ident()}"
        os.rename(snapshot, stale)
        snapshot.mkdir()
        atomic_write(snapshot.parent / PENDING_LAYER, str(digest).encode())
        rmtree(stale, ignore_errors=True)


def _layer_meta(layer: Layer) -> dict[str, object]:
    return {"digest": str(layer.digest), "diff_id": str(layer.diff_id), "size": layer.size,
            "media_type": layer.media_type}


class StatCache:
    """What the cache key needs of each context entry, trusted while its stat holds.

    The stamp is (device, inode, size, mtime, ctime, mode, uid, gid): writing a file, and
    also chmod, chown and setxattr, move ctime, so an entry whose stamp is unchanged has the
    same content, mode, owner and xattrs, and is described from memory without a syscall more.
    Stored with ``marshal`` (plain values only; the store is the builder's own).
    """

    VERSION = 3

    def __init__(self, store: Store, context_root: Path) -> None:
        name = hashlib.sha256(str(context_root.resolve()).encode()).hexdigest()[:32]
        self.path = store.cache_dir / "stat" / f"{name}.bin"
        self.trees_path = store.cache_dir / "stat" / f"{name}.trees"
        self._lock = threading.Lock()
        self._dirty = False
        self._entries: dict[str, tuple[object, str]] | None = None  # loaded on the first describe
        self._trees: dict[str, str] = _load(self.trees_path, self.VERSION) or {}
        self._trees_dirty = False

    def _loaded(self) -> dict[str, tuple[object, str]]:
        if self._entries is None:
            self._entries = _load(self.path, self.VERSION) or {}
        return self._entries

    def tree(self, key: str) -> str | None:
        """The entries hash of a directory whose find listing had digest ``key`` before.

        An unchanged listing (same names and stamps, in the same order) means unchanged
        entries, so a no-op rebuild of a large context reads only find's output."""
        return self._trees.get(key)

    def remember_tree(self, key: str, value: str) -> None:
        with self._lock:
            if len(self._trees) > 64:  # listings of older states of the context
                self._trees.clear()
            self._trees[key] = value
            self._trees_dirty = True

    def describe(self, host: str, st: os.stat_result, compute: Callable[[], str]) -> str:
        stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode,
                 st.st_uid, st.st_gid)
        return self.describe_stamp(host, stamp, compute)

    def describe_stamp(self, host: str, stamp: tuple[object, ...], compute: Callable[[], str]) -> str:
        """``describe`` with the stamp already known (from ``fastwalk.list_tree``)."""
        entries = self._loaded()
        entry = entries.get(host)
        if entry is not None and entry[0] == stamp:
            return entry[1]
        value = compute()
        with self._lock:
            entries[host] = (stamp, value)
            self._dirty = True
        return value

    def save(self) -> None:
        with self._lock:
            entries = marshal.dumps((self.VERSION, self._entries)) if self._dirty else None
            trees = marshal.dumps((self.VERSION, self._trees)) if self._trees_dirty else None
            self._dirty = self._trees_dirty = False
        if entries is not None:
            _write(self.path, entries)
        if trees is not None:
            _write(self.trees_path, trees)


def _load(path: Path, version: int) -> dict[str, Any] | None:
    """A marshalled dict of this version, or None (missing, old or corrupt: a miss)."""
    try:
        found, value = marshal.loads(path.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    return value if found == version and isinstance(value, dict) else None
