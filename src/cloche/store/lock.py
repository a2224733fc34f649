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


@contextmanager
def locked(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold a lock on ``path`` (created when missing) for the duration of the block.

    ``shared=True`` takes a reader lock: many readers, or one writer, at a time.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
