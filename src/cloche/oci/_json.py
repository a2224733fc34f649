"""Canonical JSON: one byte form per value, so digests of what cloche writes are reproducible.

Compact separators, UTF-8 without ``\\u`` escapes of non-ASCII text; object keys in the order
the caller built them (manifests use the spec's order, configs sort their keys).
"""

from __future__ import annotations

import json
from typing import Any

from cloche.oci.errors import ImageFormatError

MAX_DEPTH = 64  # nesting of arrays and objects; OCI documents need about 5


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                      sort_keys=sort_keys, allow_nan=False).encode("utf-8")


def loads(data: bytes | str, *, what: str, source: str | None = None) -> Any:
    """Parse JSON, turning any failure into an ImageFormatError that names what and where.

    Documents come from registries and archives: nesting deeper than ``MAX_DEPTH`` is refused
    (the decoder itself recurses, and so do the code that freezes and walks the values)."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise ImageFormatError(f"{what} nests arrays or objects too deeply",
                               source=source) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ImageFormatError(f"{what} is not valid JSON: {e}", source=source) from e
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else None
        if children is None:
            continue
        if depth > MAX_DEPTH:
            raise ImageFormatError(f"{what} nests arrays or objects more than {MAX_DEPTH} "
                                   "levels deep", source=source)
        stack.extend((child, depth + 1) for child in children)
    return value
