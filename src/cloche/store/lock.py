"""Advisory file locks that serialise cloche processes sharing one store.

Two ``cloche`` processes (a build and an ``images`` listing, two builds...) may open the same
store at once. Blob files need no lock (they are written under a temporary name and renamed,
and identical content has an identical name), but ``index.json`` is read, changed and written
back, so every such update holds an exclusive ``fcntl.flock`` on a lock file next to it.
``flock`` locks die with their process, so a killed cloche never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cloche.errors import StoreError


class LockBusyError(StoreError):
    """A lock asked for without waiting is held by another process (or open file)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"the store is busy: {path} is locked by another cloche process",
                         hint="try again when the other command has finished")
        self.path = path


@contextmanager
def locked(path: Path, *, shared: bool = False, wait: bool = True) -> Iterator[None]:
    """Hold a lock on ``path`` (created when missing) for the duration of the block.

    ``shared=True`` takes a reader lock: many readers, or one writer, at a time.
    ``wait=False`` raises LockBusyError at once instead of waiting for the lock.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        flags = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, flags if wait else flags | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockBusyError(path) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
