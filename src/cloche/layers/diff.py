"""overlayfs upper directory -> layer tar with OCI whiteouts (one layer per build step).

After a RUN/COPY/ADD/WORKDIR step the sandbox's overlay upper directory holds exactly what the
step changed, in overlay's own notation. The OCI image spec uses another: a deleted path is a
character device 0/0 in overlay and an empty ``.wh.NAME`` file in a layer; a directory whose
lower contents are hidden carries the xattr ``trusted.overlay.opaque=y`` (``user.overlay.`` when
mounted with ``userxattr``) in overlay and is followed by ``.wh..wh..opq`` in a layer, written
right after the directory entry so that readers clear the lower contents before adding the new
ones. overlay's bookkeeping xattrs (origin, impure, nlink...) are dropped.

Mount the overlay with ``redirect_dir=off,metacopy=off,index=off``: a renamed directory
(redirect) or a metadata-only copy-up keeps its data in the lower layers, which a diff of the
upper directory alone cannot express; those are refused with a LayerError here rather than
written as a wrong layer.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from cloche.compression import Compression
from cloche.errors import LayerError
from cloche.fs.tarentry import OPAQUE_MARKER, WHITEOUT_PREFIX, EntryType, TarEntry
from cloche.layers.tarwriter import ByteSink, LayerBlob
from cloche.layers.tree import TreeScanner, write_entries

__all__ = ["OverlayDiffScanner", "write_overlay_diff", "upper_is_empty", "is_whiteout_device",
           "is_opaque_dir"]

_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_UNSUPPORTED_XATTRS = ("trusted.overlay.redirect", "user.overlay.redirect",
                       "trusted.overlay.metacopy", "user.overlay.metacopy")


def is_whiteout_device(st: os.stat_result) -> bool:
    """overlay's deletion marker: a character device with device number 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _getxattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EPERM):
            return None
        raise


def is_opaque_dir(path: str) -> bool:
    """Whether the upper directory at ``path`` hides everything below it in lower layers."""
    return any(_getxattr(path, name) in (b"y", b"y\x00") for name in _OPAQUE_XATTRS)


class OverlayDiffScanner(TreeScanner):
    """A tree walk of an upper directory that speaks OCI whiteouts instead of overlay's."""

    def convert(self, rel: str, full: str, st: os.stat_result
                ) -> Iterator[tuple[TarEntry, str | None]]:
        if is_whiteout_device(st):
            parent, _, name = rel.rpartition("/")
            wh = f"{parent}/{WHITEOUT_PREFIX}{name}" if parent else WHITEOUT_PREFIX + name
            yield self._marker(wh, st), None
            return
        if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            for name in _UNSUPPORTED_XATTRS:
                if _getxattr(full, name) is not None:
                    raise LayerError(
                        f"{rel}: overlay {name.rsplit('.', 1)[-1]} entry in the upper directory "
                        "cannot be turned into a layer; mount the overlay with "
                        "redirect_dir=off,metacopy=off")
        yield from super().convert(rel, full, st)
        if stat.S_ISDIR(st.st_mode) and is_opaque_dir(full):
            yield self._marker(f"{rel}/{OPAQUE_MARKER}", st), None

    def _marker(self, path: str, st: os.stat_result) -> TarEntry:
        """An empty regular file for a whiteout; the owner and time of what it stands for."""
        return TarEntry(path=path, type=EntryType.FILE, mode=0o600, uid=st.st_uid,
                        gid=st.st_gid, mtime=self.mtime(st))


def upper_is_empty(upper: str | Path) -> bool:
    """True when the step changed nothing: no entry at all in the upper directory.

    (A step that only created and removed a new file still copied its directory up, with a new
    mtime; that is a change and makes a layer, as it does with BuildKit.)
    """
    with os.scandir(upper) as it:
        return next(it, None) is None


def write_overlay_diff(upper: str | Path, sink: ByteSink,
                       compression: Compression = Compression.GZIP, *,
                       source_date_epoch: int | None = None, clamp: bool = True,
                       level: int | None = None, threads: int | None = None) -> LayerBlob:
    """Write the changes recorded in an (unmounted or quiescent) upper directory as a layer."""
    scanner = OverlayDiffScanner(upper, source_date_epoch=source_date_epoch, clamp=clamp)
    return write_entries(iter(scanner), sink, compression, level=level, threads=threads)
