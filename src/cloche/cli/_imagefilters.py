"""``cloche images --filter``: Docker's image filters over the store's rows.

``reference=PATTERN`` (a glob over ``NAME`` or ``NAME:TAG``, ``*`` not crossing ``/``, as
Docker matches it), ``dangling=true|false`` (untagged images), ``before=IMAGE`` and
``since=IMAGE`` (made before or after that image), ``label=KEY`` or ``label=KEY=VALUE``. Several
values of one filter are alternatives, different filters must all hold, as in Docker.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cloche.errors import ConfigError

KEYS = ("reference", "dangling", "before", "since", "label")


def _parse(filters: Sequence[str]) -> dict[str, list[str]]:
    wanted: dict[str, list[str]] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS or not value:
            raise ConfigError(f"--filter {item!r}: expected one of "
                              + ", ".join(f"{k}=..." for k in KEYS))
        if key == "dangling" and value.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"--filter {item!r}: dangling is true or false")
        wanted.setdefault(key, []).append(value)
    return wanted


def _glob(pattern: str, text: str) -> bool:
    """Go's path.Match: ``*`` and ``?`` do not cross ``/``."""
    regex = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
                    for c in pattern)
    return re.fullmatch(regex, text) is not None


def apply_filters(rows: list[Any], filters: Sequence[str], root: Path | None) -> list[Any]:
    """The rows (ops.describe.ImageSummary) every filter keeps."""
    if not filters:
        return rows
    wanted = _parse(filters)
    from cloche import api

    def created_of(ref: str) -> str:
        doc = api.inspect(ref, root=root)
        return str(doc.get("Created") or "")

    labels_cache: dict[str, dict[str, str]] = {}

    def labels(row: Any) -> dict[str, str]:
        if row.image_id not in labels_cache:
            doc = api.inspect(row.digest, root=root)
            labels_cache[row.image_id] = dict((doc.get("Config") or {}).get("Labels") or {})
        return labels_cache[row.image_id]

    out = []
    before = [created_of(v) for v in wanted.get("before", [])]
    since = [created_of(v) for v in wanted.get("since", [])]
    for row in rows:
        named = row.repository != "<none>"
        if "dangling" in wanted and any(
                (v.lower() in ("true", "1")) == named for v in wanted["dangling"]):
            continue
        if "reference" in wanted:
            names = [row.repository, f"{row.repository}:{row.tag}"] if named else []
            if not any(_glob(p, n) for p in wanted["reference"] for n in names):
                continue
        created = row.created or ""
        if before and not all(created < b for b in before):
            continue
        if since and not all(created > s for s in since):
            continue
        if "label" in wanted:
            have = labels(row)
            if not all((k in have) if not sep else have.get(k) == v
                       for k, sep, v in (item.partition("=") for item in wanted["label"])):
                continue
        out.append(row)
    return out
