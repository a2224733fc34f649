"""The local store: content-addressed blobs and image names in an OCI layout under one root.

``Store.open(root)`` gives ``store.blobs`` (a ``BlobStore``) and the name operations (tag,
resolve, image, put_image, names, untag, remove, gc). The root also holds the build engine's
areas, named by the store (``snapshots_dir``, ``cache_dir``, ``builds_dir``, ``tmp_dir``).
The store is blobs, names and locks only: import, save/load and inspect are operations of the
face (``cloche.ops``), and names are parsed by the OCI core's ``Reference``.
"""

from cloche.store.blobs import BlobNotFoundError, BlobStore, BlobWriter
from cloche.store.index import REF_NAME, CorruptIndexError, NameIndex, atomic_write
from cloche.store.lock import LockBusyError, locked
from cloche.store.root import default_root
from cloche.store.store import AmbiguousImageError, GcReport, Store, StoredImage, canonical_name

__all__ = ["REF_NAME", "AmbiguousImageError", "GcReport", "Store", "StoredImage", "canonical_name",
           "BlobNotFoundError", "BlobStore", "BlobWriter", "CorruptIndexError", "LockBusyError",
           "NameIndex", "atomic_write", "default_root", "locked"]
