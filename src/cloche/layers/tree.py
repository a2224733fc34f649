"""Directory tree -> layer tar: a rootfs or a snapshot written as one deterministic layer.

The walk is depth first with each directory's children sorted by their bytes, so the same tree
always gives the same tar (and digest) whatever order the file system lists it in. A directory
comes before its contents; the root itself is not an entry (Docker's layers have none). Files
with several links inside the tree are written once, later names become hard link entries.
Sockets are skipped, as ``docker build`` does. Overlay's own bookkeeping xattrs never leak.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from cloche.compression import Compression
from cloche.errors import LayerError
from cloche.fs.owners import OWNER_XATTR, owner_of
from cloche.fs.tarentry import EntryType, TarEntry
from cloche.layers.tarwriter import ByteSink, LayerBlob, TarWriter

__all__ = ["TreeScanner", "write_tree", "write_entries", "read_xattrs", "DROPPED_XATTR_PREFIXES",
           "LAYER_XATTRS"]

# overlayfs' (and fuse-overlayfs') own metadata, SELinux labels that belong to the build host,
# not the image, and the owner cloche records where it cannot chown (cloche.fs.owners)
DROPPED_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.", "user.fuseoverlayfs.",
                          "security.selinux", OWNER_XATTR)


# The only xattr a step's layer keeps: BuildKit's differ writes layers with containerd's change
# writer, which copies security.capability and no other xattr (the snapshot keeps them all).
LAYER_XATTRS = ("security.capability",)


def read_xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    """The xattrs of ``path`` itself (links not followed), sorted, bookkeeping ones dropped."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM, errno.ENODATA):
            return ()
        raise
    pairs = []
    for name in sorted(names):
        if name.startswith(DROPPED_XATTR_PREFIXES):
            continue
        try:
            pairs.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EPERM):
                raise
    return tuple(pairs)


class TreeScanner:
    """Walks a directory tree and yields (entry, source path) pairs in tar order.

    ``source_date_epoch``: with ``clamp`` (BuildKit's rewrite-timestamp), mtimes newer than it
    are set to it; without ``clamp`` every mtime is it. Subclasses (the overlay diff) override
    ``convert`` to turn special files into whiteouts.
    """

    # the xattr names entries keep (None: all but the dropped ones); a step's diff: LAYER_XATTRS
    kept_xattrs: tuple[str, ...] | None = None

    def __init__(self, root: str | os.PathLike[str], *, source_date_epoch: int | None = None,
                 clamp: bool = True) -> None:
        self.root = os.fspath(root)
        self.source_date_epoch = source_date_epoch
        self.clamp = clamp
        self._links: dict[tuple[int, int], str] = {}

    def mtime(self, st: os.stat_result) -> int:
        seconds = st.st_mtime_ns // 1_000_000_000
        epoch = self.source_date_epoch
        if epoch is None:
            return seconds
        return min(seconds, epoch) if self.clamp else epoch

    def __iter__(self) -> Iterator[tuple[TarEntry, str | None]]:
        try:
            root_st = os.lstat(self.root)
        except FileNotFoundError:
            raise LayerError(f"{self.root}: no such directory to write as a layer") from None
        if not stat.S_ISDIR(root_st.st_mode):
            raise LayerError(f"{self.root}: not a directory")
        stack: list[tuple[str, list[str]]] = [("", self._children(self.root))]
        while stack:
            rel_dir, names = stack[-1]
            if not names:
                stack.pop()
                continue
            name = names.pop()
            rel = f"{rel_dir}/{name}" if rel_dir else name
            full = os.path.join(self.root, rel)
            st = os.lstat(full)
            yield from self.convert(rel, full, st)
            if stat.S_ISDIR(st.st_mode) and self.descend(full, st):
                stack.append((rel, self._children(full)))

    @staticmethod
    def _children(path: str) -> list[str]:
        names = os.listdir(path)
        names.sort(key=os.fsencode, reverse=True)  # reversed: pop() takes the smallest
        return names

    def descend(self, full: str, st: os.stat_result) -> bool:
        """Whether to walk into a directory (always, for a plain tree)."""
        return True

    def convert(self, rel: str, full: str, st: os.stat_result
                ) -> Iterator[tuple[TarEntry, str | None]]:
        """The entries for one file system object (none for a socket)."""
        entry = self.entry_for(rel, full, st)
        if entry is not None:
            yield entry, full if entry.type is EntryType.FILE else None

    def entry_for(self, rel: str, full: str, st: os.stat_result) -> TarEntry | None:
        mode = st.st_mode
        uid, gid = owner_of(full, st)
        common = dict(path=rel, mode=stat.S_IMODE(mode), uid=uid, gid=gid,
                      mtime=self.mtime(st))
        if stat.S_ISSOCK(mode):
            return None
        xattrs = read_xattrs(full)
        if self.kept_xattrs is not None:
            xattrs = tuple(x for x in xattrs if x[0] in self.kept_xattrs)
        if stat.S_ISDIR(mode):
            return TarEntry(type=EntryType.DIR, xattrs=xattrs, **common)  # type: ignore[arg-type]
        if stat.S_ISLNK(mode):
            return TarEntry(type=EntryType.SYMLINK, linkname=os.readlink(full), xattrs=xattrs,
                            **common)  # type: ignore[arg-type]
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self._links.get(key)
            if first is not None:
                return TarEntry(type=EntryType.HARDLINK, linkname=first, xattrs=xattrs,
                                **common)  # type: ignore[arg-type]
            self._links[key] = rel
        if stat.S_ISREG(mode):
            return TarEntry(type=EntryType.FILE, size=st.st_size, xattrs=xattrs,
                            **common)  # type: ignore[arg-type]
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = EntryType.CHAR if stat.S_ISCHR(mode) else EntryType.BLOCK
            return TarEntry(type=kind, devmajor=os.major(st.st_rdev),
                            devminor=os.minor(st.st_rdev), xattrs=xattrs,
                            **common)  # type: ignore[arg-type]
        if stat.S_ISFIFO(mode):
            return TarEntry(type=EntryType.FIFO, xattrs=xattrs, **common)  # type: ignore[arg-type]
        return None


def write_entries(pairs: Iterator[tuple[TarEntry, str | None]], sink: ByteSink,
                  compression: Compression = Compression.GZIP, *, level: int | None = None,
                  threads: int | None = None) -> LayerBlob:
    """Write (entry, source path) pairs as one layer blob into ``sink``."""
    with TarWriter(sink, compression, level=level, threads=threads) as writer:
        try:
            for entry, source in pairs:
                if source is None or entry.size == 0:
                    writer.add(entry)
                    continue
                fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd, "rb", buffering=0) as content:
                    writer.add(entry, content)
        except OSError as e:  # unreadable or vanished while walking: name the path
            raise LayerError(f"cannot archive {e.filename or '?'}: {e.strerror or e}") from e
    assert writer.result is not None
    return writer.result


def write_tree(root: str | Path, sink: ByteSink, compression: Compression = Compression.GZIP,
               *, source_date_epoch: int | None = None, clamp: bool = True,
               level: int | None = None, threads: int | None = None) -> LayerBlob:
    """Write the whole tree under ``root`` (not the root entry itself) as one layer."""
    scanner = TreeScanner(root, source_date_epoch=source_date_epoch, clamp=clamp)
    return write_entries(iter(scanner), sink, compression, level=level, threads=threads)
