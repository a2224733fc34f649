"""The typed tar entry shared by the layer writer, the reader and the extractor.

It lives in ``cloche.fs`` because ``fs.extract`` writes these entries to disk for both image
layers and ADD's archives; the tar format itself (reading, writing) is ``cloche.layers``'.

A layer is a sequence of these: the writer turns directory trees into them, the reader turns tar
headers into them, apply turns them into files. Paths are always relative, cleaned, with '/'
separators and no trailing slash; a path that would climb out of the root through '..' cannot
be represented (``clean_path`` refuses it), so everything downstream can trust it.
"""

from __future__ import annotations

import enum
import posixpath
import stat
from dataclasses import dataclass, field

from cloche.errors import UnsafePathError

__all__ = ["EntryType", "TarEntry", "clean_path", "WHITEOUT_PREFIX", "OPAQUE_MARKER"]

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


class EntryType(enum.Enum):
    """The kind of a tar entry; the value is the ustar type flag."""

    FILE = "0"
    HARDLINK = "1"
    SYMLINK = "2"
    CHAR = "3"
    BLOCK = "4"
    DIR = "5"
    FIFO = "6"

    @property
    def mode_bits(self) -> int:
        return _MODE_BITS[self]


_MODE_BITS = {
    EntryType.FILE: stat.S_IFREG, EntryType.HARDLINK: stat.S_IFREG,
    EntryType.SYMLINK: stat.S_IFLNK, EntryType.CHAR: stat.S_IFCHR,
    EntryType.BLOCK: stat.S_IFBLK, EntryType.DIR: stat.S_IFDIR, EntryType.FIFO: stat.S_IFIFO,
}


@dataclass(frozen=True)
class TarEntry:
    """One entry of a layer tar.

    ``mode`` holds permission bits with setuid/setgid/sticky (0o7777), never type bits.
    ``linkname`` is the symlink target as written, or the hard link's target path (cleaned).
    ``xattrs`` is a sorted tuple of (name, value bytes) pairs.
    ``sparse``: for a sparse file read from a tar, its data regions (offset, length), in
    order; the rest of its ``size`` bytes are holes (zeros never stored). None otherwise.
    """

    path: str
    type: EntryType
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = field(default=())
    sparse: tuple[tuple[int, int], ...] | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """The last path component."""
        return posixpath.basename(self.path)

    @property
    def parent(self) -> str:
        """The parent directory's path ('' for the root)."""
        return posixpath.dirname(self.path)

    @property
    def is_whiteout(self) -> bool:
        """A ``.wh.NAME`` deletion marker (the opaque marker included)."""
        return self.name.startswith(WHITEOUT_PREFIX)

    @property
    def is_opaque(self) -> bool:
        """The ``.wh..wh..opq`` marker: the parent directory hides all lower contents."""
        return self.name == OPAQUE_MARKER

    @property
    def whiteout_target(self) -> str:
        """For ``dir/.wh.NAME``, the path ``dir/NAME`` that it deletes."""
        return posixpath.join(self.parent, self.name[len(WHITEOUT_PREFIX):])


def clean_path(name: str, *, what: str = "entry") -> str:
    """A tar name made relative and clean: leading '/' and './' dropped, '.' and '//' folded.

    Names that climb above the root with '..' are refused with UnsafePathError: an absolute
    name is confined (as Docker does), a '..' escape is an attack or a broken tool. The root
    itself is returned as ''.
    """
    if "\x00" in name:
        raise UnsafePathError(f"{what} {name!r}: NUL byte in path")
    cleaned = posixpath.normpath("/" + name)  # '/' + name: '..' that escapes shows at the front
    relative = posixpath.normpath(name.lstrip("/")) if name.strip("/") else "."
    if relative == ".." or relative.startswith("../"):
        raise UnsafePathError(f"{what} {name!r} climbs out of the root through '..'")
    cleaned = cleaned.lstrip("/")
    return "" if cleaned in (".", "") else cleaned
