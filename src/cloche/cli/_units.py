"""Sizes as the progress renderers print them (``16.8MB``, one decimal)."""

from __future__ import annotations


def step_size(n: int | None) -> str:
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1000
    return f"{n}B"


def transfer_size(n: int) -> str:
    """Bytes as BuildKit's progress prints a transfer: decimal units, two decimals
    (``1.05MB``), whole bytes below a kilobyte (``512B``)."""
    if n < 1000:
        return f"{n}B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000
        if value < 1000 or unit == "PB":
            break
    return f"{value:.2f}{unit}"


def transfer_text(done: int, total: int | None, seconds: float, final: bool) -> str:
    """``1.05MB / 3.40MB 0.4s`` (`` done`` once complete), as BuildKit's plain progress
    prints a status; the seconds only past 0.01 s, as there."""
    text = f"{transfer_size(done)} / {transfer_size(total)}" if total else (
        transfer_size(done) if done else "")
    if seconds > 0.01:
        text += f" {seconds:.1f}s"
    if final:
        text += " done"
    return text.strip()
