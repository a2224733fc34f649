"""Overall deadlines for registry requests: a registry that trickles cannot hold a pull for ever.

httpx's timeouts bound each socket operation, not a request: a registry that sends one byte
every two seconds never trips a 60-second read timeout, and a pull waited for ever. Every
request of ``RegistryClient`` now runs under a ``Deadline``: a watchdog thread that, when the
time is up, shuts down the sockets the request opened (httpcore reports each new connection
to the request's ``trace`` hook), so the blocked read fails at once; the client then raises
``RegistryTimeoutError`` naming the registry, and does not retry (a registry that slow is
not having a bad second).

The time allowed is ``CLOCHE_REGISTRY_TIMEOUT`` seconds (default 300) for a request and the
body of its answer (manifests, tokens, errors), token requests made on its behalf included.
A blob may take longer while it keeps coming: its deadline is the larger of that and the
bytes received so far divided by ``MIN_RATE`` (64 KiB/s), so a big layer over a slow link
goes on, and a stall or a trickle ends one timeout after the transfer fell behind that rate.
An upload gets the timeout plus its size over ``MIN_RATE``. Docker has no such deadline.

A connection is not kept alive between requests (the pool would hand a request a socket it
was never told about); one TCP or TLS set-up per request is small next to a layer.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx

from cloche.errors import RegistryError
from cloche.fs.limits import seconds_from_env

__all__ = ["DEFAULT_TIMEOUT", "ENV_TIMEOUT", "MIN_RATE", "Deadline", "RegistryTimeoutError",
           "on_request", "registry_timeout", "check_current"]

ENV_TIMEOUT = "CLOCHE_REGISTRY_TIMEOUT"
DEFAULT_TIMEOUT = 300.0
MIN_RATE = 64 << 10  # bytes per second a blob transfer must average past the timeout
_NEW_STREAM = ("connection.connect_tcp.complete", "connection.start_tls.complete")
_local = threading.local()


class RegistryTimeoutError(RegistryError):
    """A registry that did not answer a request within its deadline."""


def registry_timeout() -> float:
    """``CLOCHE_REGISTRY_TIMEOUT`` (seconds, > 0), else the default."""
    return seconds_from_env(ENV_TIMEOUT, DEFAULT_TIMEOUT, "600")


class Deadline:
    """The deadline of one request: ``with Deadline(...)`` makes it the calling thread's, so
    the requests made in the block (retries, token requests) carry it (see ``on_request``)."""

    def __init__(self, seconds: float, registry: str, what: str) -> None:
        self.seconds = seconds
        self.registry = registry
        self.what = what
        self.start = time.monotonic()
        self._allowed = seconds
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._outer: Deadline | None = None
        self.expired = False

    def __enter__(self) -> Deadline:
        self._outer = getattr(_local, "deadline", None)
        _local.deadline = self
        threading.Thread(target=self._watch, daemon=True, name="cloche-deadline").start()
        return self

    def __exit__(self, *exc: object) -> None:
        _local.deadline = self._outer
        self._done.set()

    def progress(self, received: int) -> None:
        """``received`` bytes of a blob so far: it may last as long as it averages MIN_RATE."""
        self._allowed = max(self._allowed, received / MIN_RATE)

    def extend(self, size: int) -> None:
        """A body of ``size`` bytes to send: that much more time, at MIN_RATE."""
        self._allowed = self.seconds + size / MIN_RATE

    def _watch(self) -> None:
        while True:
            remaining = self.start + self._allowed - time.monotonic()
            if remaining <= 0:
                self._expire()
                return
            if self._done.wait(remaining):
                return

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpcore's trace hook: remember each socket the request opens."""
        if event not in _NEW_STREAM:
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def check(self) -> None:
        """Raise RegistryTimeoutError when the time is up."""
        if self.expired or time.monotonic() > self.start + self._allowed:
            self.expired = True
            raise self.error()

    def error(self) -> RegistryTimeoutError:
        return RegistryTimeoutError(
            f"{self.what}: the registry {self.registry} did not answer within "
            f"{self.seconds:g} s ({ENV_TIMEOUT}), or sent a blob slower than "
            f"{MIN_RATE >> 10} KiB/s; giving up", reference=self.what,
            hint=f"a slow or hostile registry; set {ENV_TIMEOUT} (seconds) to wait longer")


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def on_request(request: httpx.Request) -> None:
    """httpx's request hook: the request runs under the calling thread's deadline (and is
    not sent at all when that deadline has passed)."""
    deadline: Deadline | None = getattr(_local, "deadline", None)
    if deadline is None:
        return
    deadline.check()
    request.extensions["trace"] = deadline.trace


def check_current() -> None:
    """Raise the calling thread's RegistryTimeoutError if its deadline has passed (callers
    check before retrying after a broken connection, which may be the deadline's doing)."""
    deadline: Deadline | None = getattr(_local, "deadline", None)
    if deadline is not None:
        deadline.check()
