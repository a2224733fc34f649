"""Apply layer tars to a directory (flattening a rootfs), honouring whiteouts, never escaping.

The writing itself is ``cloche.fs.extract.Extractor``, the one tar extractor (ADD's archives
use it too), whose docstring gives the confinement and whiteout rules. What this module adds
is the layer's side: the blob is decompressed and read as typed entries by ``LayerReader``
(names cleaned, '..' escapes refused, the expanded size bounded), its diff_id is computed on
the way and checked, and errors are LayerErrors. ``flatten_image`` checks every layer of an
image against its config's ``rootfs.diff_ids`` and names the image and the layer in errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cloche.errors import LayerError
from cloche.fs.extract import ExtractError, Extractor
from cloche.layers.diffids import DiffIdMismatchError, diff_id_mismatch
from cloche.layers.reader import LayerReader
from cloche.oci.digest import Digest, verify
from cloche.oci.image import Image

__all__ = ["ApplyResult", "LayerApplier", "apply_layer", "flatten", "flatten_image"]


@dataclass(frozen=True)
class ApplyResult:
    """What applying one layer did: entries seen, and the diff_id of its tar."""

    entries: int
    diff_id: Digest


class LayerApplier:
    """Applies layers, in order, to one destination directory.

    ``devices``: "error" (default) refuses device entries when not root, "skip" drops them.
    ``same_owner`` (default: running as root) applies the tar's uid/gid and xattrs.
    """

    def __init__(self, dest: str | Path, *, same_owner: bool | None = None,
                 devices: str = "error") -> None:
        self._extractor = Extractor(dest, same_owner=same_owner, devices=devices)
        self.dest = self._extractor.dest

    def apply(self, stream: BinaryIO, *, diff_id: Digest | None = None,
              decompress: bool = True) -> ApplyResult:
        """Apply one layer blob (compression sniffed); verify its diff_id when given."""
        reader = LayerReader(stream, decompress=decompress)
        try:
            count = self._extractor.extract(reader)
        except ExtractError as e:
            raise LayerError(e.message) from e
        assert reader.diff_id is not None
        if diff_id is not None:
            verify(diff_id, reader.diff_id, "layer diff_id")
        return ApplyResult(entries=count, diff_id=reader.diff_id)


def apply_layer(stream: BinaryIO, dest: str | Path, *, diff_id: Digest | None = None,
                devices: str = "error") -> ApplyResult:
    """Apply one layer blob to ``dest`` (see LayerApplier)."""
    return LayerApplier(dest, devices=devices).apply(stream, diff_id=diff_id)


def flatten(layer_streams: Iterable[BinaryIO], dest: str | Path, *,
            diff_ids: Sequence[Digest] | None = None, devices: str = "error"
            ) -> list[ApplyResult]:
    """Apply layers bottom-up to ``dest``, giving the image's root filesystem.

    Each stream is closed once applied (so a generator of ``layer.open()`` leaks nothing).
    With ``diff_ids`` (the config's rootfs.diff_ids) each layer's tar is verified against its
    diff_id; a mismatch raises DigestMismatchError after that layer, and ``dest`` should then
    be thrown away.
    """
    applier = LayerApplier(dest, devices=devices)
    results = []
    expected = list(diff_ids) if diff_ids is not None else None
    for i, stream in enumerate(layer_streams):
        if expected is not None and i >= len(expected):
            raise LayerError(f"more layers than diff_ids ({len(expected)})")
        try:
            results.append(applier.apply(
                stream, diff_id=expected[i] if expected is not None else None))
        finally:
            stream.close()
    if expected is not None and len(results) != len(expected):
        raise LayerError(f"{len(results)} layers for {len(expected)} diff_ids")
    return results


def flatten_image(image: Image, dest: str | Path, *, name: str, devices: str = "error"
                  ) -> list[ApplyResult]:
    """Apply the layers of ``image`` bottom-up to ``dest``, each checked against the diff id
    its config names; errors name the image (``name``: its reference) and the layer.

    A config that lies about a layer (DiffIdMismatchError), or lists another number of layers,
    is refused; ``dest`` should then be thrown away.
    """
    diff_ids = image.config.diff_ids
    if len(diff_ids) != len(image.layers):
        raise DiffIdMismatchError(f"{name}: the manifest has {len(image.layers)} layers but "
                                  f"the config's rootfs.diff_ids lists {len(diff_ids)}")
    applier = LayerApplier(dest, devices=devices)
    results = []
    for layer, expected in zip(image.layers, diff_ids):
        try:
            with layer.open() as stream:
                result = applier.apply(stream)
        except LayerError as e:  # the same type, naming where it happened
            e.message = f"{name}: layer {layer.digest}: {e.message}"
            e.args = (e.message,)
            raise
        if result.diff_id != expected:
            raise diff_id_mismatch(name, layer.digest, expected, result.diff_id)
        results.append(result)
    return results
