"""Small pieces of the wire protocol: digest headers, Content-Range, streamed bodies, backoff."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

import httpx

from cloche.oci.digest import Digest

CHUNK = 1 << 20
MAX_DELAY = 30.0


def file_chunks(opener: Callable[[], BinaryIO],
                progress: Callable[[int], object] | None = None) -> Callable[[], Iterator[bytes]]:
    """A body factory: each call streams the file again (a retried request re-reads it).
    ``progress`` hears the bytes sent so far: a chunk counts once the sender asks for the
    next one, so it has gone out."""
    def gen() -> Iterator[bytes]:
        sent = 0
        with opener() as f:
            while chunk := f.read(CHUNK):
                yield chunk
                sent += len(chunk)
                if progress is not None:
                    progress(sent)
    return gen


def digest_or_none(text: str | None) -> Digest | None:
    if not text or ":" not in text:
        return None
    try:
        return Digest.parse(text.strip())
    except ValueError:
        return None


def range_start(resp: httpx.Response) -> int:
    """Where a 206 answer starts (0 for a full 200 answer)."""
    if resp.status_code != 206:
        return 0
    value = resp.headers.get("content-range", "")
    try:
        return int(value.split(" ", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return 0


def backoff_delay(base: float, attempt: int, retry_after: str | None = None) -> float:
    """Exponential backoff, at least what ``Retry-After`` asks (seconds or a date), capped."""
    delay = base * (2 ** (attempt - 1))
    if retry_after:
        try:
            delay = max(delay, float(retry_after))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(retry_after)
                delay = max(delay, when.timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    return float(min(delay, MAX_DELAY))
