"""Layers: tar writing (trees and overlay diffs), reading, compression and safe application.

The build engine turns each step's overlay upper directory into a layer blob with
``write_overlay_diff`` (whiteouts in OCI notation), base images are flattened into a rootfs
with ``flatten``; both stream, with bounded memory, and compute digests as the bytes pass.
``Compression`` is re-exported from ``cloche.compression``, which reads every format.
"""

from typing import TYPE_CHECKING, Any

from cloche import _lazy

if TYPE_CHECKING:
    from cloche.compression import Compression, UnsupportedCompressionError
    from cloche.fs.tarentry import OPAQUE_MARKER, WHITEOUT_PREFIX, EntryType, TarEntry, clean_path
    from cloche.layers.apply import ApplyResult, LayerApplier, apply_layer, flatten
    from cloche.layers.compress import open_compressed_writer
    from cloche.layers.diff import upper_is_empty, write_overlay_diff
    from cloche.layers.reader import LayerReader, iter_layer
    from cloche.layers.tarwriter import LayerBlob, TarWriter
    from cloche.layers.tree import TreeScanner, write_entries, write_tree

# Imported on first use: a no-op rebuild reads no layer and writes none.
_EXPORTS = {
    "ApplyResult": "cloche.layers.apply",
    "Compression": "cloche.compression",
    "EntryType": "cloche.fs.tarentry",
    "LayerApplier": "cloche.layers.apply",
    "LayerBlob": "cloche.layers.tarwriter",
    "LayerReader": "cloche.layers.reader",
    "OPAQUE_MARKER": "cloche.fs.tarentry",
    "TarEntry": "cloche.fs.tarentry",
    "TarWriter": "cloche.layers.tarwriter",
    "TreeScanner": "cloche.layers.tree",
    "UnsupportedCompressionError": "cloche.compression",
    "WHITEOUT_PREFIX": "cloche.fs.tarentry",
    "apply_layer": "cloche.layers.apply",
    "clean_path": "cloche.fs.tarentry",
    "flatten": "cloche.layers.apply",
    "iter_layer": "cloche.layers.reader",
    "open_compressed_writer": "cloche.layers.compress",
    "upper_is_empty": "cloche.layers.diff",
    "write_entries": "cloche.layers.tree",
    "write_overlay_diff": "cloche.layers.diff",
    "write_tree": "cloche.layers.tree",
}


__getattr__ = _lazy.exports(__name__, _EXPORTS, globals())


__all__ = [
    "ApplyResult", "Compression", "EntryType", "LayerApplier", "LayerBlob", "LayerReader",
    "OPAQUE_MARKER", "TarEntry", "TarWriter", "TreeScanner", "UnsupportedCompressionError",
    "WHITEOUT_PREFIX", "apply_layer", "clean_path", "flatten",
    "iter_layer", "open_compressed_writer", "upper_is_empty",
    "write_entries", "write_overlay_diff", "write_tree",
]
