"""An image's config ``rootfs.diff_ids`` checked against its layers before the store trusts it.

The manifest names each layer's blob (compressed, usually); the config names the digest of
each layer's *uncompressed* tar, its diff id. Nothing ties the two together but a check: an
image whose config lies (a diff id of some other tar) used to pass its false diff ids into
every image built on it, and a cache keyed on them. moby's layer store and containerd's
unpacker refuse such an image; so does cloche, when it pulls or loads one, and when it
flattens a base image (``Workspace.image_rootfs``, where the check is free).

Checking means decompressing each layer once. A checked pair (blob digest, diff id) is
remembered in a directory of records (the store's ``diffids/``), written only after the
check, so a layer shared by many images is decompressed once; a record never vouches for
another diff id. A layer stored
uncompressed (digest equal to its diff id) needs no pass: its bytes are verified as they
are read.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cloche.compression import open_decompressed
from cloche.errors import LayerError
from cloche.fs.limits import max_layer_size, too_large
from cloche.oci.digest import Digest, Digester
from cloche.oci.image import Image, Layer

__all__ = ["DiffIdMismatchError", "verify_diff_ids", "diff_id_mismatch"]

_CHUNK = 1 << 20


class DiffIdMismatchError(LayerError):
    """A layer whose uncompressed tar is not the one the image config names (or an image
    whose config lists another number of layers than its manifest)."""


def diff_id_mismatch(image: str, layer: Digest, expected: Digest, actual: Digest
                     ) -> DiffIdMismatchError:
    """The error for one lying layer: names the image, the layer and both digests."""
    return DiffIdMismatchError(
        f"{image}: layer {layer} is not what the image config says: its uncompressed tar "
        f"is {actual}, the config's rootfs.diff_ids says {expected}; refusing the image",
        hint="the image was built wrongly or tampered with; Docker refuses it too")


def _record(records: Path, digest: Digest) -> Path:
    return records / f"{digest.algorithm}-{digest.hex}"


def _write_record(record: Path, diff_id: Digest) -> None:
    record.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = record.with_name(f".{record.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(str(diff_id))
    os.replace(tmp, record)


def _computed(layer: Layer, image: str, limit: int) -> Digest:
    """The digest of the layer's uncompressed tar (its blob verified on the way)."""
    digester = Digester(layer.diff_id.algorithm)
    with layer.open() as blob, open_decompressed(blob) as tar:
        while chunk := tar.read(_CHUNK):
            digester.update(chunk)
            if digester.size > limit:
                err = too_large(limit)
                err.message = f"{image}: layer {layer.digest}: {err.message}"
                err.args = (err.message,)
                raise err
    return digester.digest()


def _check(layer: Layer, image: str, records: Path | None, limit: int) -> None:
    if layer.digest == layer.diff_id:
        return  # stored uncompressed: its bytes are checked against the digest when read
    record = _record(records, layer.digest) if records is not None else None
    if record is not None:
        try:
            known = Digest.parse(record.read_text().strip())
        except (OSError, ValueError):
            pass
        else:
            if known != layer.diff_id:
                raise diff_id_mismatch(image, layer.digest, layer.diff_id, known)
            return
    actual = _computed(layer, image, limit)
    if actual != layer.diff_id:
        raise diff_id_mismatch(image, layer.digest, layer.diff_id, actual)
    if record is not None:
        _write_record(record, actual)


def verify_diff_ids(image: Image, name: str, *, records: Path | None = None,
                    workers: int = 4) -> None:
    """Raise DiffIdMismatchError unless every layer of ``image`` is the tar its config names.

    ``name`` (the reference, or the archive it comes from) is in the error. ``records``: the
    directory of checked layers, used and added to (None: check everything).
    """
    layers: Sequence[Layer] = image.layers
    diff_ids = image.config.diff_ids
    if len(diff_ids) != len(layers):
        raise DiffIdMismatchError(f"{name}: the manifest has {len(layers)} layers but the "
                                  f"config's rootfs.diff_ids lists {len(diff_ids)}")
    for layer, diff_id in zip(layers, diff_ids):
        if layer.diff_id != diff_id:  # an Image made in code, not read from a manifest
            raise diff_id_mismatch(name, layer.digest, diff_id, layer.diff_id)
    limit = max_layer_size()
    if len(layers) <= 1 or workers <= 1:
        for layer in layers:
            _check(layer, name, records, limit)
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(layers)),
                            thread_name_prefix="cloche-diffid") as pool:
        for future in [pool.submit(_check, layer, name, records, limit) for layer in layers]:
            future.result()
