"""overlayfs upper directory -> layer tar with OCI whiteouts (one layer per build step).

After a RUN/COPY/ADD/WORKDIR step the sandbox's overlay upper directory holds exactly what the
step changed, in overlay's own notation. The OCI image spec uses another: a deleted path is a
character device 0/0 in overlay and an empty ``.wh.NAME`` file in a layer; a directory whose
lower contents are hidden carries the xattr ``trusted.overlay.opaque=y`` (``user.overlay.`` when
mounted with ``userxattr``) in overlay and is followed by ``.wh..wh..opq`` in a layer, written
right after the directory entry so that readers clear the lower contents before adding the new
ones. overlay's bookkeeping xattrs (origin, impure, nlink...) are dropped.

fuse-overlayfs (sandbox/overlay.py, where the kernel refuses overlayfs) writes two more forms,
which are read here too although the sandbox rewrites them into the kernel's after each step:
an empty ``.wh.NAME`` file for a deletion where it may not make a device, and, for an opaque
directory, ``user.fuseoverlayfs.opaque`` with an empty ``.wh..wh..opq`` file inside. Both files
are bookkeeping, never content; neither is a whiteout of a ``.wh.`` name (it writes some).

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
from typing import TYPE_CHECKING

from cloche.compression import Compression
from cloche.errors import LayerError
from cloche.fs.owners import owner_of
from cloche.fs.tarentry import OPAQUE_MARKER, WHITEOUT_PREFIX, EntryType, TarEntry
from cloche.layers.tarwriter import ByteSink, LayerBlob
from cloche.layers.tree import LAYER_XATTRS, TreeScanner, write_entries

if TYPE_CHECKING:
    from cloche.layers.unchanged import Unchanged

__all__ = ["OverlayDiffScanner", "write_overlay_diff", "upper_is_empty", "is_whiteout_device",
           "is_whiteout", "is_opaque_dir", "fuse_whiteout_of", "is_bookkeeping"]

_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque", "user.fuseoverlayfs.opaque")
FUSE_OPAQUE_FILE = WHITEOUT_PREFIX + WHITEOUT_PREFIX + ".opq"  # fuse-overlayfs' opaque marker
_UNSUPPORTED_XATTRS = ("trusted.overlay.redirect", "user.overlay.redirect",
                       "trusted.overlay.metacopy", "user.overlay.metacopy")


def is_whiteout_device(st: os.stat_result) -> bool:
    """overlay's deletion marker: a character device with device number 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


WHITEOUT_XATTRS = ("trusted.overlay.whiteout", "user.overlay.whiteout")


def is_whiteout(path: str, st: os.stat_result) -> bool:
    """A deletion marker in either of overlayfs' forms: the 0/0 character device, or an
    empty regular file with an ``overlay.whiteout`` xattr (the kernel's form where a device
    may not be made: the chroot isolation mode writes it on a container's overlayfs, which
    refuses 0/0 devices, engine/plaintree.py)."""
    if is_whiteout_device(st):
        return True
    if not stat.S_ISREG(st.st_mode) or st.st_size != 0:
        return False
    try:  # listed, not read: reading a user xattr needs read permission (the file is 0000)
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return False
        raise
    return any(name in names for name in WHITEOUT_XATTRS)


def _getxattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EPERM):
            return None
        raise


def is_opaque_dir(path: str) -> bool:
    """Whether the upper directory at ``path`` hides everything below it in lower layers
    (an xattr, or fuse-overlayfs' ``.wh..wh..opq`` file in it)."""
    if any(_getxattr(path, name) in (b"y", b"y\x00") for name in _OPAQUE_XATTRS):
        return True
    try:
        return stat.S_ISREG(os.lstat(os.path.join(path, FUSE_OPAQUE_FILE)).st_mode)
    except OSError:
        return False


def fuse_whiteout_of(name: str, st: os.stat_result) -> str | None:
    """The name an entry ``name`` deletes when it is fuse-overlayfs' ``.wh.NAME`` whiteout (an
    empty regular file), else None."""
    if not name.startswith(WHITEOUT_PREFIX) or not stat.S_ISREG(st.st_mode) or st.st_size:
        return None
    target = name[len(WHITEOUT_PREFIX):]
    return target if target and not target.startswith(WHITEOUT_PREFIX) else None


def is_bookkeeping(name: str, path: str, st: os.stat_result) -> bool:
    """An upper entry that stands for nothing in a layer: fuse-overlayfs' ``.wh..wh..opq``
    file (its directory is opaque, ``is_opaque_dir``), or a whiteout of a ``.wh.`` name."""
    if not name.startswith(WHITEOUT_PREFIX):
        return False
    if name == FUSE_OPAQUE_FILE and stat.S_ISREG(st.st_mode):
        return True
    return is_whiteout(path, st) or (
        name.startswith(WHITEOUT_PREFIX * 2) and stat.S_ISREG(st.st_mode) and not st.st_size)


class OverlayDiffScanner(TreeScanner):
    """A tree walk of an upper directory that speaks OCI whiteouts instead of overlay's.

    ``unchanged`` (layers/unchanged.py) names what the step did not change: those entries are
    left out, and a directory that is the same as below is written only before something
    that is written inside it, as BuildKit's differ does. Entries keep only the
    ``security.capability`` xattr, as BuildKit's layers (``LAYER_XATTRS``)."""

    kept_xattrs = LAYER_XATTRS

    def __init__(self, root: str | os.PathLike[str], *, unchanged: Unchanged | None = None,
                 source_date_epoch: int | None = None, clamp: bool = True) -> None:
        super().__init__(root, source_date_epoch=source_date_epoch, clamp=clamp)
        self.unchanged = unchanged
        self._pending: list[tuple[str, list[tuple[TarEntry, str | None]]]] = []
        # whiteouts the upper directory does not hold, by directory (a directory made again)
        self._gone: dict[str, list[str]] = {}
        for path in sorted(unchanged.whiteouts if unchanged is not None else ()):
            parent, _, name = path.rpartition("/")
            self._gone.setdefault(parent, []).append(name)

    def convert(self, rel: str, full: str, st: os.stat_result
                ) -> Iterator[tuple[TarEntry, str | None]]:
        known = self.unchanged
        if known is None:
            yield from self._convert(rel, full, st)
            return
        while self._pending and not rel.startswith(self._pending[-1][0] + "/"):
            self._pending.pop()  # a same directory nothing was written in: left out
        if rel in known.skip:
            return
        entries = list(self._convert(rel, full, st))
        if rel in self._gone and stat.S_ISDIR(st.st_mode):
            entries.extend((self._marker(f"{rel}/{WHITEOUT_PREFIX}{name}", full, st), None)
                           for name in self._gone[rel])
        if rel in known.parents_only:
            self._pending.append((rel, entries))
            return
        for _, held in self._pending:
            yield from held
        self._pending.clear()
        yield from entries

    def _convert(self, rel: str, full: str, st: os.stat_result
                 ) -> Iterator[tuple[TarEntry, str | None]]:
        name = rel.rpartition("/")[2]
        if name.startswith(WHITEOUT_PREFIX):
            if is_bookkeeping(name, full, st):
                return
            if fuse_whiteout_of(name, st) is not None:  # already named as OCI names it
                yield self._marker(rel, full, st), None
                return
        if is_whiteout(full, st):
            parent, _, name = rel.rpartition("/")
            wh = f"{parent}/{WHITEOUT_PREFIX}{name}" if parent else WHITEOUT_PREFIX + name
            yield self._marker(wh, full, st), None
            return
        if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            for name in _UNSUPPORTED_XATTRS:
                if _getxattr(full, name) is not None:
                    raise LayerError(
                        f"{rel}: overlay {name.rsplit('.', 1)[-1]} entry in the upper directory "
                        "cannot be turned into a layer; mount the overlay with "
                        "redirect_dir=off,metacopy=off")
        yield from super().convert(rel, full, st)
        known = self.unchanged
        if stat.S_ISDIR(st.st_mode) and (
                (is_opaque_dir(full) and not (known is not None and rel in known.not_opaque))
                or (known is not None and rel in known.opaque)):
            yield self._marker(f"{rel}/{OPAQUE_MARKER}", full, st), None

    def _marker(self, path: str, full: str, st: os.stat_result) -> TarEntry:
        """An empty regular file for a whiteout; the owner and time of what it stands for."""
        uid, gid = owner_of(full, st)
        return TarEntry(path=path, type=EntryType.FILE, mode=0o600, uid=uid, gid=gid,
                        mtime=self.mtime(st))


def upper_is_empty(upper: str | Path) -> bool:
    """True when the step changed nothing: no entry at all in the upper directory.

    (A step that only created and removed a new file still copied its directory up, with a new
    mtime; that is a change and makes a layer, as it does with BuildKit.)
    """
    with os.scandir(upper) as it:
        return next(it, None) is None


def write_overlay_diff(upper: str | Path, sink: ByteSink,
                       compression: Compression = Compression.GZIP, *,
                       unchanged: Unchanged | None = None,
                       source_date_epoch: int | None = None, clamp: bool = True,
                       level: int | None = None, threads: int | None = None) -> LayerBlob:
    """Write the changes recorded in an (unmounted or quiescent) upper directory as a layer,
    leaving out what ``unchanged`` names."""
    scanner = OverlayDiffScanner(upper, unchanged=unchanged, source_date_epoch=source_date_epoch,
                                 clamp=clamp)
    return write_entries(iter(scanner), sink, compression, level=level, threads=threads)
