"""CPU slots: how many stages may do CPU-bound work at once (``--jobs``, default: the cores).

Every reachable stage runs on a thread of its own from the start of the build, so a stage that
waits (for the stages it needs, for a pull, for a RUN step's process) holds nothing and blocks
nobody: RUN steps of independent stages run at once, as BuildKit runs them. What is bounded is
the work that keeps a core busy in this process: copying files, hashing the context, writing
and compressing layers, flattening base images. Each of those takes a slot for its duration.

A slot is reentrant within a thread (a COPY step holds one and its layer commit asks again),
so code that takes one need not know whether its caller already did. Take a slot only around
work that never waits for another stage: a holder that waited for a stage needing a slot
could deadlock a build with ``--jobs 1``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class CpuSlots:
    """A counting semaphore of ``count`` slots, reentrant per thread."""

    def __init__(self, count: int) -> None:
        self.count = max(1, count)
        self._semaphore = threading.Semaphore(self.count)
        self._held = threading.local()

    @contextmanager
    def slot(self) -> Iterator[None]:
        depth: int = getattr(self._held, "depth", 0)
        if depth == 0:
            self._semaphore.acquire()
        self._held.depth = depth + 1
        try:
            yield
        finally:
            self._held.depth = depth
            if depth == 0:
                self._semaphore.release()

    @property
    def holding(self) -> bool:
        """Whether the calling thread holds a slot."""
        return bool(getattr(self._held, "depth", 0))


UNBOUNDED = CpuSlots(1 << 16)  # for a workspace used outside a build (tests, tools)
