"""Helpers shared by the store commands: the ``--root`` option, opening the store, and the
human forms of sizes and ages that ``docker images`` prints."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:  # loaded by the commands that use them, not by every command's start
    from cloche.oci.platform import Platform
    from cloche.store import Store

F = TypeVar("F", bound=Callable[..., Any])


def root_option(func: F) -> F:
    """``--root DIR``: the store to use (default: $CLOCHE_ROOT, /var/lib/cloche for root)."""
    return click.option(
        "--root", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Store directory (default: $CLOCHE_ROOT, /var/lib/cloche for root, "
             "else ~/.local/share/cloche).")(func)


def open_store(root: Path | None, *, create: bool = True) -> Store:
    """The store at ``root`` (else $CLOCHE_ROOT, else the default); see ``check_root``."""
    from cloche.store import Store

    if not create:
        check_root(root)
    return Store.open(root)


def check_root(root: Path | None) -> None:
    """Commands that only read or change what is stored call this first: a mistyped
    ``--root`` (or $CLOCHE_ROOT) then fails with its path instead of quietly making a new,
    empty store there (and ``cloche du --root /typo`` would print zeros as if all was well).
    """
    import os

    from cloche.errors import StoreError
    from cloche.store.root import not_a_store

    explicit = root if root is not None else (
        Path(os.environ["CLOCHE_ROOT"]).expanduser() if os.environ.get("CLOCHE_ROOT") else None)
    why = not_a_store(explicit) if explicit is not None else None
    if why is not None:
        flag = "--root" if root is not None else "$CLOCHE_ROOT"
        raise StoreError(f"the store {str(explicit)!r} given by {flag} {why}",
                         hint="check the path; build, pull, load and import create a store")


def read_stdin_dockerfile() -> str:
    """``-f -``: the Dockerfile as UTF-8 text on standard input (a binary file is refused
    here, not rendered as garbage under a caret)."""
    import sys

    from cloche.errors import ConfigError

    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(f"the Dockerfile on standard input (-f -) is not UTF-8 text "
                          f"(line {line}, byte {err.start})") from None


# containerd's lists (platforms/database.go): what --platform may name.
_KNOWN_ARCHES = frozenset({
    "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "loong64", "mips",
    "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc", "ppc64", "ppc64le",
    "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm"})


def parse_platform(text: str | None, flag: str = "--platform") -> Platform | None:
    """``--platform`` as a Platform, refusing an operating system or an architecture that
    does not exist (``not/a/platform``), which would otherwise match nothing much later."""
    if text is None or not text.strip():
        return None  # as buildx: an empty --platform asks for nothing
    from cloche.errors import ConfigError
    from cloche.oci.platform import _KNOWN_OS, InvalidPlatformError, Platform

    try:
        platform = Platform.parse(text)
    except InvalidPlatformError as err:
        raise ConfigError(f"{flag} {text!r}: {err.message}") from err
    normal = platform.normalized()
    if normal.os not in _KNOWN_OS:
        raise ConfigError(f"{flag} {text!r}: unknown operating system {platform.os!r}",
                          hint="a platform looks like linux/amd64 or linux/arm64/v8")
    if normal.architecture not in _KNOWN_ARCHES:
        raise ConfigError(f"{flag} {text!r}: unknown architecture {platform.architecture!r}",
                          hint="a platform looks like linux/amd64 or linux/arm64/v8")
    return platform


def human_size(n: int) -> str:
    """Decimal units with three significant digits, as Docker prints sizes (``4.26MB``)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.3g}{unit}"
        value /= 1000
    raise AssertionError("unreachable")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def human_age(text: str | None, now: datetime | None = None) -> str:
    """``3 days ago`` from an RFC 3339 time; ``N/A`` when unknown (Docker's wording)."""
    when = parse_time(text)
    if when is None:
        return "N/A"
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    if seconds < 1:
        return "Less than a second ago"
    for limit, size, word in ((60, 1, "second"), (3600, 60, "minute"), (86400 * 2, 3600, "hour"),
                              (86400 * 14, 86400, "day"), (86400 * 60, 86400 * 7, "week"),
                              (86400 * 365 * 2, 86400 * 30, "month")):
        if seconds < limit:
            count = int(seconds // size)
            if word == "hour" and count == 1:
                return "About an hour ago"
            return f"{count} {word}{'s' if count != 1 else ''} ago"
    return f"{int(seconds // (86400 * 365))} years ago"


def parse_size(text: str) -> int:
    """``10GB``, ``512MB``, ``1.5g``, ``1024`` as bytes (Docker's units: decimal)."""
    units = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6,
             "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    value = text.strip().lower()
    number = value.rstrip("kmgtib")
    unit = value[len(number):]
    try:
        amount = float(number) if unit in units and number else -1.0
    except ValueError:
        amount = -1.0
    if not 0 <= amount < float("inf"):  # also refuses nan and inf
        raise ValueError(f"invalid size {text!r}: want e.g. 512MB, 10GB")
    return int(amount * units[unit])


def parse_duration(text: str) -> float:
    """``24h``, ``30m``, ``90s``, ``2h30m``, ``7d`` as seconds (Go durations plus days)."""
    import re

    parts = re.findall(r"(\d+(?:\.\d+)?)(d|h|m|s|ms)", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"invalid duration {text!r}: want e.g. 24h, 30m, 7d")
    scale = {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)
