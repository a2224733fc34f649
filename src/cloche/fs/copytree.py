"""Copy a directory tree of any depth: iterative, links copied as links, special files made.

It stands in for ``shutil.copytree(src, dst, symlinks=True)`` where the tree comes from a
build (a read-write bind mount's private copy, the seed of a cache mount): Python 3.11's
copytree recurses once per level, so a step that made a 1,500-level tree crashed the next
one with RecursionError. Here an explicit stack holds the directories still to copy. What
``shutil`` does not do and a build needs: a FIFO or a device is made anew (``copy2`` would
open a FIFO and wait for a writer for ever), a socket is skipped (as ``docker build`` does),
and owners are kept when running as root. Modes, times and xattrs are kept as ``copy2``
keeps them; a directory's times are set once its contents are in.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from cloche.fs.owners import set_owner

__all__ = ["copytree"]


def copytree(src: str | Path, dst: str | Path) -> None:
    """Copy the directory ``src`` to ``dst`` (which must not exist); links are not followed."""
    as_root = os.geteuid() == 0
    done: list[tuple[str, str]] = []  # directories, for their metadata at the end
    pending = [(os.fspath(src), os.fspath(dst))]
    while pending:
        source, target = pending.pop()
        os.mkdir(target, 0o700)
        done.append((source, target))
        with os.scandir(source) as it:
            entries = list(it)
        for entry in entries:
            there = os.path.join(target, entry.name)
            st = entry.stat(follow_symlinks=False)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                pending.append((entry.path, there))
                continue
            if stat.S_ISLNK(mode):
                os.symlink(os.readlink(entry.path), there)
                shutil.copystat(entry.path, there, follow_symlinks=False)
            elif stat.S_ISREG(mode):
                shutil.copy2(entry.path, there, follow_symlinks=False)
            elif stat.S_ISFIFO(mode) or (as_root and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode))):
                os.mknod(there, stat.S_IFMT(mode) | 0o600, st.st_rdev)
                shutil.copystat(entry.path, there, follow_symlinks=False)
            else:
                continue  # a socket, or a device without root
            if as_root:
                set_owner(there, st.st_uid, st.st_gid)
                if not stat.S_ISLNK(mode):
                    os.chmod(there, stat.S_IMODE(mode))  # chown dropped setuid/setgid
    for source, target in reversed(done):
        st = os.lstat(source)
        if as_root:
            set_owner(target, st.st_uid, st.st_gid)
        shutil.copystat(source, target, follow_symlinks=False)
