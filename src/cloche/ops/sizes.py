"""Image and layer sizes as Docker shows them: what the files take, not what the blobs take.

``docker images``, ``docker image inspect`` (``Size``) and ``docker history`` report the
uncompressed size of each layer as Docker's layer store measures it: the bytes of its files,
each file once (a hard link is not counted again), a symbolic link counting the length of its
target, directories and whiteouts nothing. cloche reads that from the layer's tar, once per
layer: the figure is kept under ``<store>/cache/sizes/<diff id>`` (a memo: a missing or
unreadable one is measured again, and one that cannot be written is only not kept).
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable

from cloche.oci.image import Layer
from cloche.store import Store, atomic_write

__all__ = ["content_size", "image_content_size"]


def content_size(store: Store, layer: Layer) -> int:
    """The bytes of ``layer``'s files, as Docker counts them."""
    memo = store.cache_dir / "sizes" / layer.diff_id.hex
    try:
        return int(memo.read_text())
    except (OSError, ValueError):
        pass
    total = 0
    with layer.open_uncompressed() as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.isfile():
                total += member.size
            elif member.issym():
                total += len(member.linkname.encode())
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(memo, str(total).encode())
    except OSError:
        pass  # a store this user may only read: measured, not kept
    return total


def image_content_size(store: Store, layers: Iterable[Layer]) -> int:
    return sum(content_size(store, layer) for layer in layers)
