"""``index.json``: the store's names, kept as an OCI image index so the root is an OCI layout.

Each name is one entry of ``manifests`` whose ``org.opencontainers.image.ref.name``
annotation holds the canonical reference (``docker.io/library/busybox:latest``); skopeo,
umoci and containerd read such a layout directly. An image that lost its last name to a newer
image of the same name stays as an entry without that annotation: a dangling image, as
``docker images`` shows ``<none>``, until it is removed or pruned.

Every change is a read-modify-write under an exclusive ``flock`` on ``index.lock``, and the new
file replaces the old by rename, so two processes tagging at once lose no name and a reader
never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloche.errors import StoreError
from cloche.store.blobs import fsync_dir
from cloche.store.lock import locked

REF_NAME = "org.opencontainers.image.ref.name"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
LAYOUT_VERSION = "1.0.0"

Entry = dict[str, Any]  # one OCI descriptor, as JSON


class CorruptIndexError(StoreError):
    """``index.json`` cannot be read; names are lost until it is repaired."""


def entry_name(entry: Entry) -> str | None:
    return (entry.get("annotations") or {}).get(REF_NAME)


def entry_digest(entry: Entry) -> str:
    return str(entry.get("digest", ""))


def _without_name(entry: Entry) -> Entry:
    out = dict(entry)
    annotations = {k: v for k, v in (entry.get("annotations") or {}).items() if k != REF_NAME}
    if annotations:
        out["annotations"] = annotations
    else:
        out.pop("annotations", None)
    return out


def _with_name(entry: Entry, name: str) -> Entry:
    out = dict(entry)
    out["annotations"] = {**(entry.get("annotations") or {}), REF_NAME: name}
    return out


class NameIndex:
    """Names of images in one store root; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "index.json"
        self.lock_path = root / "index.lock"
        layout = root / "oci-layout"
        if not layout.exists():
            atomic_write(layout, json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode())
        if not self.path.exists():
            with locked(self.lock_path):
                if not self.path.exists():
                    self._write([])

    # --- reading -----------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        """A snapshot of every entry (named and dangling)."""
        with locked(self.lock_path, shared=True):
            return self._read()

    def _read(self) -> list[Entry]:
        try:
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return []
        except (ValueError, OSError) as e:
            raise CorruptIndexError(f"cannot read {self.path}: {e}") from e
        manifests = doc.get("manifests") if isinstance(doc, dict) else None
        if not isinstance(manifests, list):
            raise CorruptIndexError(f"{self.path} is not an OCI image index")
        return [m for m in manifests if isinstance(m, dict) and "digest" in m]

    def _write(self, entries: list[Entry]) -> None:
        doc = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": entries}
        atomic_write(self.path, json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n")

    # --- changing ----------------------------------------------------------------------

    def update(self, change: Callable[[list[Entry]], list[Entry]]) -> list[Entry]:
        """Apply ``change`` to the current entries under the lock; returns the new entries."""
        with locked(self.lock_path):
            entries = change(self._read())
            self._write(entries)
            return entries

    def set_name(self, name: str, entry: Entry) -> None:
        """Point ``name`` at ``entry``; the image it pointed at before may become dangling."""
        target = _with_name(entry, name)

        def change(entries: list[Entry]) -> list[Entry]:
            old = [e for e in entries if entry_name(e) == name]
            rest = [e for e in entries if entry_name(e) != name]
            # a dangling entry for the new image is replaced by its name
            rest = [e for e in rest if not (entry_name(e) is None
                                            and entry_digest(e) == entry_digest(entry))]
            for e in old:
                if entry_digest(e) != entry_digest(entry) and not any(
                        entry_digest(r) == entry_digest(e) for r in rest):
                    rest.append(_without_name(e))
            return rest + [target]

        self.update(change)

    def add_dangling(self, entry: Entry) -> None:
        """Record an image with no name (unless it already has an entry)."""

        def change(entries: list[Entry]) -> list[Entry]:
            if any(entry_digest(e) == entry_digest(entry) for e in entries):
                return entries
            return entries + [_without_name(entry)]

        self.update(change)

    def remove_name(self, name: str) -> Entry | None:
        """Forget ``name``; returns the entry it had, or None when it had none."""
        removed: list[Entry] = []

        def change(entries: list[Entry]) -> list[Entry]:
            removed.extend(e for e in entries if entry_name(e) == name)
            return [e for e in entries if entry_name(e) != name]

        self.update(change)
        return removed[0] if removed else None

    def remove_digest(self, digest: str) -> list[Entry]:
        """Forget every entry (named or not) for the image with this manifest digest."""
        removed: list[Entry] = []

        def change(entries: list[Entry]) -> list[Entry]:
            removed.extend(e for e in entries if entry_digest(e) == digest)
            return [e for e in entries if entry_digest(e) != digest]

        self.update(change)
        return removed


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, whole."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
