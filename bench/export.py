"""Layer export throughput: one tree written as a layer blob, in several compressions.

All variants run cloche's own tree walker and tar writer (``cloche.layers.write_tree``), so
they differ only in the compressor: ISA-L gzip on all cores (cloche's default), ISA-L on one
thread, zstd level 3, no compression (the walker and tar writer alone), and the reference,
Python's zlib gzip at level 6 (what ``gzip.GzipFile`` and most Python tools use). Throughput is
uncompressed tar bytes per second, the blob written to a file on the same disk; also per
CPU second (all threads of the process), which a busy machine disturbs less than wall time.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cloche.layers import Compression, write_tree


@dataclass(frozen=True)
class ExportResult:
    method: str
    seconds: float
    cpu_seconds: float
    tar_bytes: int
    blob_bytes: int

    @property
    def mb_per_s(self) -> float:
        return self.tar_bytes / 1e6 / self.seconds


def _zlib6(root: Path, sink) -> tuple[int, int]:
    counter = _Counting(sink)
    with gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=6, mtime=0) as gz:
        blob = write_tree(root, gz, Compression.NONE)
    return blob.size, counter.size


class _Counting:
    def __init__(self, sink) -> None:
        self.sink = sink
        self.size = 0

    def write(self, data) -> int:
        self.size += len(data)
        return self.sink.write(data)

    def flush(self) -> None:
        self.sink.flush()


def _cloche(compression: Compression, threads: int | None) -> Callable[[Path, object], tuple[int, int]]:
    def run(root: Path, sink) -> tuple[int, int]:
        counter = _Counting(sink)
        blob = write_tree(root, counter, compression, threads=threads)
        # write_tree reports the blob; the tar size is what went into the compressor
        return _tar_size(root) if compression is not Compression.NONE else blob.size, blob.size
    return run


_TAR_SIZES: dict[str, int] = {}


def _tar_size(root: Path) -> int:
    key = str(root)
    if key not in _TAR_SIZES:
        with open(os.devnull, "wb") as null:
            _TAR_SIZES[key] = write_tree(root, null, Compression.NONE).size
    return _TAR_SIZES[key]


METHODS: dict[str, Callable[[Path, object], tuple[int, int]]] = {
    "cloche gzip (isal, all cores)": _cloche(Compression.GZIP, None),
    "cloche gzip (isal, 1 thread)": _cloche(Compression.GZIP, 1),
    "cloche zstd (level 3)": _cloche(Compression.ZSTD, None),
    "cloche tar only (no compression)": _cloche(Compression.NONE, None),
    "zlib gzip level 6 (reference)": _zlib6,
}


def measure(root: Path, out_dir: Path, repeat: int,
            methods: dict[str, Callable] = METHODS) -> dict[str, list[ExportResult]]:
    """Each method ``repeat`` times, interleaved so that a slow spell hits all alike."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _tar_size(root)  # also warms the page cache for every method alike
    results: dict[str, list[ExportResult]] = {m: [] for m in methods}
    for _ in range(repeat):
        for name, fn in methods.items():
            target = out_dir / "layer.blob"
            with open(target, "wb") as sink:
                start, cpu = time.perf_counter(), time.process_time()
                tar_bytes, blob_bytes = fn(root, sink)
                sink.flush()
                seconds = time.perf_counter() - start
                cpu = time.process_time() - cpu
            target.unlink()
            results[name].append(ExportResult(name, seconds, cpu, tar_bytes, blob_bytes))
    return results
