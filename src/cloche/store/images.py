"""Images in and out of the store: the bridge between ``Store`` and ``cloche.oci.image``.

Reading gives an ``Image`` whose layers stay in the store's blob files (nothing is loaded but
the manifest and config, both verified against their digests). Writing streams every blob the
image has into the store through verifying writers, blobs first and the name last, so a name
never points at an image whose blobs are not all there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloche.errors import StoreError
from cloche.oci import mediatypes as mt
from cloche.oci.descriptor import Descriptor
from cloche.oci.image import Image, read_blob
from cloche.oci.manifest import Index, parse
from cloche.oci.platform import Platform
from cloche.store.blobs import CHUNK

if TYPE_CHECKING:
    from cloche.store.store import Store


def load_image(store: Store, descriptor: Descriptor, platform: Platform | None = None) -> Image:
    """The image ``descriptor`` names; for an index, the entry for ``platform`` (or the host)."""
    name = f"local store {store.root}"
    seen = 0
    while True:
        data = read_blob(store.blobs, descriptor, "manifest", limit=8 << 20)
        value = parse(data, media_type=descriptor.media_type or None, source=name)
        if not isinstance(value, Index):
            return Image.from_manifest(data, store.blobs, media_type=descriptor.media_type or None,
                                       name=name)
        seen += 1
        if seen > 4:
            raise StoreError(f"index {descriptor.digest} nests too deeply")
        descriptor = value.select(platform or Platform.host())


def store_image(store: Store, image: Image, names: list[str]) -> Descriptor:
    """Copy every blob of ``image`` into the store, then name it; returns its descriptor."""
    for layer in image.layers:
        if store.blobs.has(layer.digest):  # refreshed: protected from a concurrent gc
            continue
        with layer.open(verify=False) as src, store.blobs.writer(layer.digest, size=layer.size) as w:
            while chunk := src.read(CHUNK):
                w.write(chunk)
    store.blobs.put_bytes(image.config_bytes, image.config_digest)
    store.blobs.put_bytes(image.manifest_bytes, image.digest)
    try:
        platform = image.platform if image.config.architecture else None
    except ValueError:
        platform = None
    descriptor = Descriptor(image.media_type, image.digest, len(image.manifest_bytes),
                            platform=platform)
    if names:
        for name in names:
            store.tag(name, descriptor)
    else:
        store.index.add_dangling(descriptor.to_dict())
    return descriptor


def is_index(descriptor: Descriptor) -> bool:
    return descriptor.media_type in mt.INDEX_TYPES
