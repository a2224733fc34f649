"""Issue 9, item 17: ``ADD f /f`` where f is a FIFO in the context hung for ever, because ADD
opened every local source to sniff for an archive.

BuildKit's ADD treats only regular files as archives (``isArchivePath`` returns false for any
other type) and copies a FIFO as a FIFO node, as COPY does. Special files are never opened.
"""

from __future__ import annotations

import ctypes
import os
import stat
import struct
from pathlib import Path

from tests.engine.conftest import Builder, rootfs


def test_add_of_a_fifo_copies_the_node(builder: Builder) -> None:
    ctx = builder.context("FROM busybox-test:1\nADD f /f\nADD d/ /d/\nCOPY f /copied\n")
    os.mkfifo(ctx / "f")
    (ctx / "d").mkdir()
    os.mkfifo(ctx / "d" / "g")
    result = builder.cli("build", "-t", "fifo:1", str(ctx), timeout=90)
    assert result.returncode == 0
    tree = rootfs(builder.store.image("fifo:1"), builder.dir / "out")
    assert stat.S_ISFIFO(os.lstat(tree / "f").st_mode)
    assert stat.S_ISFIFO(os.lstat(tree / "d" / "g").st_mode)
    assert stat.S_ISFIFO(os.lstat(tree / "copied").st_mode)


def test_add_of_a_link_to_a_fifo(builder: Builder) -> None:
    """A source that is a symlink is followed (inside the context) and then not opened."""
    ctx = builder.context("FROM busybox-test:1\nADD link /f\n")
    os.mkfifo(ctx / "fifo")
    os.symlink("fifo", ctx / "link")
    builder.cli("build", "-t", "fifo:2", str(ctx), timeout=90)
    tree = rootfs(builder.store.image("fifo:2"), builder.dir / "out")
    assert stat.S_ISFIFO(os.lstat(tree / "f").st_mode)


class OpenWatch:
    """inotify on one path: whether anything opened or read it (an lstat, listxattr or a
    mknod elsewhere does not count; an open of a device node does, even of /dev/null)."""

    IN_ACCESS, IN_OPEN, IN_NONBLOCK = 0x1, 0x20, os.O_NONBLOCK

    def __init__(self, path: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(self.IN_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), self.IN_OPEN | self.IN_ACCESS)
        assert wd >= 0, os.strerror(ctypes.get_errno())

    def events(self) -> int:
        """How many opens and reads were seen (the watch ends)."""
        count = 0
        try:
            while True:
                data = os.read(self.fd, 4096)
                offset = 0
                while offset < len(data):
                    _wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                    count += bool(mask & (self.IN_OPEN | self.IN_ACCESS))
                    offset += 16 + length
        except BlockingIOError:
            pass
        finally:
            os.close(self.fd)
        return count


def test_add_of_a_device_node_is_not_opened(builder: Builder) -> None:
    """A character device in the context (root can make one; here /dev/null's numbers, which
    open and read harmlessly) is copied as a node, and never opened: an inotify watch on it
    sees no open."""
    ctx = builder.context("FROM busybox-test:1\nADD dev /dev-copy\n")
    os.mknod(ctx / "dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    watch = OpenWatch(ctx / "dev")
    builder.cli("build", "-t", "dev:1", str(ctx), timeout=90)
    assert watch.events() == 0
    tree = rootfs(builder.store.image("dev:1"), builder.dir / "out")
    st = os.lstat(tree / "dev-copy")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
