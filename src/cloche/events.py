"""Progress events: the one protocol every long operation of cloche reports through.

The library never prints. A build, a pull or a push calls a ``Listener`` with frozen values
that subclass ``Event``, from any worker thread; the caller renders them (the CLI draws a live
view or plain lines, a program may log them or ignore them). One base class, so one listener
can follow a build that pulls its base image and pushes its result.

The build's own events (steps, stages) live in ``cloche.engine.events``; the transfer events
below are what the registry client reports for each blob of a pull or a push.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


TransferEvent = (LayerExists | LayerPulling | LayerPulled | LayerPushed | ManifestPushed
                 | BlobProgress)

__all__ = ["BlobProgress", "Event", "LayerExists", "LayerPulled", "LayerPulling", "LayerPushed", "Listener",
           "ManifestPushed", "TransferEvent", "ignore"]
