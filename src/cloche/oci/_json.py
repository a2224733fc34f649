"""Canonical JSON: one byte form per value, so digests of what cloche writes are reproducible.

Compact separators, UTF-8 without ``\\u`` escapes of non-ASCII text; object keys in the order
the caller built them (manifests use the spec's order, configs sort their keys).
"""

from __future__ import annotations

import json
from typing import Any

from cloche.oci.errors import ImageFormatError


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                      sort_keys=sort_keys, allow_nan=False).encode("utf-8")


def loads(data: bytes | str, *, what: str, source: str | None = None) -> Any:
    """Parse JSON, turning any failure into an ImageFormatError that names what and where."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ImageFormatError(f"{what} is not valid JSON: {e}", source=source) from e
