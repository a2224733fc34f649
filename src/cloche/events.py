"""Progress events: the one protocol every long operation of cloche reports through.

The library never prints. A build, a pull or a push calls a ``Listener`` with frozen values
that subclass ``Event``, from any worker thread; the caller renders them (the CLI draws a live
view or plain lines, a program may log them or ignore them). One base class, so one listener
can follow a build that pulls its base image and pushes its result.

The build's own events (steps, stages) live in ``cloche.engine.events``; the transfer events
below are what the registry client reports for each blob of a pull or a push.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, cast

from cloche.oci.descriptor import Descriptor


@dataclass(frozen=True)
class Event:
    """The base of every progress event (it carries nothing itself)."""


Listener = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The listener used when the caller wants no progress."""


# --- pull ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerExists(Event):
    """A blob of the image being pulled is in the store already: nothing to fetch."""

    reference: str
    descriptor: Descriptor


@dataclass(frozen=True)
class LayerPulling(Event):
    """A blob's download starts."""

    reference: str
    descriptor: Descriptor


@dataclass(frozen=True)
class LayerPulled(Event):
    """A blob was downloaded, verified against its digest and stored."""

    reference: str
    descriptor: Descriptor


# --- push ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerPushed(Event):
    """A blob reached the registry: ``how`` is ``uploaded``, ``mounted`` (copied there from
    another repository of the registry, no bytes sent) or ``exists`` (it was there already)."""

    reference: str
    descriptor: Descriptor
    how: str


@dataclass(frozen=True)
class ManifestPushed(Event):
    """A manifest or index was stored by the registry (an index's images come first)."""

    reference: str
    descriptor: Descriptor


# --- bytes moving -------------------------------------------------------------------------


@dataclass(frozen=True)
class BlobProgress(Event):
    """Bytes of one blob moved so far, while a pull downloads it, a push uploads it or an
    export writes it (``action``: ``pulling``, ``pushing``, ``exporting``). Sent at most about
    ten times a second per blob, and once more when the blob is complete (``done == total``).
    ``started`` is the ``time.monotonic()`` of the transfer's start, for a rate."""

    reference: str
    descriptor: Descriptor
    action: str
    done: int
    total: int | None
    started: float


class BlobMeter:
    """Counts the bytes of one blob as they move and reports them as ``BlobProgress``: at
    most one event per ``INTERVAL`` seconds (``time.monotonic``), the first at once, and one
    more from ``finish()`` with ``done == total``. The one throttle of pulls, pushes and
    exports; safe to feed from the thread that moves the blob while another reads it."""

    INTERVAL = 0.1

    def __init__(self, listener: Listener, reference: str, descriptor: Descriptor,
                 action: str, total: int | None = None) -> None:
        self.listener = listener
        self.reference = reference
        self.descriptor = descriptor
        self.action = action
        self.total = descriptor.size if total is None else total
        self.started = time.monotonic()
        self.done = 0
        self._sent_at: float | None = None
        self._finished = False
        self._lock = threading.Lock()

    def set(self, done: int) -> None:
        """``done`` bytes moved so far (a retried upload may start again from 0)."""
        with self._lock:
            self.done = done
            now = time.monotonic()
            if self._finished or (self.total is not None and done >= self.total) or (
                    self._sent_at is not None and now - self._sent_at < self.INTERVAL):
                return  # the complete count is finish()'s, once the blob is checked
            self._sent_at = now
        self._send(done)

    def add(self, n: int) -> None:
        self.set(self.done + n)

    def finish(self) -> None:
        """The blob is complete: the final event (once)."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            if self.total is not None:
                self.done = self.total
        self._send(self.done)

    def _send(self, done: int) -> None:
        self.listener(BlobProgress(self.reference, self.descriptor, self.action, done,
                                   self.total, self.started))

    def reader(self, stream: BinaryIO) -> BinaryIO:
        """``stream`` read through this meter: each read counts, and closing it once it was
        read to the end (``done == total``) finishes the meter."""
        return cast(BinaryIO, _MeteredReader(stream, self))


class _MeteredReader(io.RawIOBase):
    def __init__(self, stream: BinaryIO, meter: BlobMeter) -> None:
        self._stream = stream
        self._meter = meter

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._stream.read(-1 if size is None else size)
        if data:
            self._meter.add(len(data))
        return data

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._stream.close()
            finally:
                super().close()
                if self._meter.total is not None and self._meter.done == self._meter.total:
                    self._meter.finish()


TransferEvent = (LayerExists | LayerPulling | LayerPulled | LayerPushed | ManifestPushed
                 | BlobProgress)

__all__ = ["BlobMeter", "BlobProgress", "Event", "LayerExists", "LayerPulled", "LayerPulling",
           "LayerPushed", "Listener", "ManifestPushed", "TransferEvent", "ignore"]
