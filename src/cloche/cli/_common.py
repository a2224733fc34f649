"""Helpers shared by the store commands: the ``--root`` option, opening the store, and the
human forms of sizes and ages that ``docker images`` prints."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def root_option(func: F) -> F:
    """``--root DIR``: the store to use (default: $CLOCHE_ROOT, /var/lib/cloche for root)."""
    return click.option(
        "--root", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Store directory (default: $CLOCHE_ROOT, /var/lib/cloche for root, "
             "else ~/.local/share/cloche).")(func)


def open_store(root: Path | None) -> "Store":  # noqa: F821 - imported late
    from cloche.store import Store

    return Store.open(root)


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
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def human_age(text: str | None, now: datetime | None = None) -> str:
    """``3 days ago`` from an RFC 3339 time; ``N/A`` when unknown (Docker's wording)."""
    when = parse_time(text)
    if when is None:
        return "N/A"
    seconds = ((now or datetime.now(timezone.utc)) - when).total_seconds()
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
