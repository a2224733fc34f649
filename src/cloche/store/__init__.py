"""The local store: content-addressed blobs and image names in an OCI layout under one root.

``Store.open(root)`` gives ``store.blobs`` (a ``BlobStore``) and the name operations (tag,
resolve, image, put_image, names, untag, remove, gc). The root also holds ``snapshots/`` and
``cache/`` for the build engine. Beside this core: ``importer`` (docker import of a rootfs,
with ``changes`` for ``--change``), ``transfer`` (save/load of OCI and docker archives) and
``describe`` (what ``images`` and ``inspect`` show); import them directly, they pull in the
layer and archive code that the core does not need.
"""

from cloche.store.blobs import BlobNotFoundError, BlobStore, BlobWriter
from cloche.store.index import REF_NAME, CorruptIndexError, NameIndex, atomic_write
from cloche.store.lock import LockBusyError, locked
from cloche.store.root import default_root
from cloche.store.store import AmbiguousImageError, GcReport, Store, StoredImage, canonical_name

__all__ = ["REF_NAME", "AmbiguousImageError", "GcReport", "Store", "StoredImage", "canonical_name",
           "BlobNotFoundError", "BlobStore", "BlobWriter", "CorruptIndexError", "LockBusyError",
           "NameIndex", "atomic_write", "default_root", "locked"]
