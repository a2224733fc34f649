"""``cloche build --call outline|targets[,format=json]``: printed as buildx prints them."""

from __future__ import annotations

import json
from typing import Any

import click

from cloche.errors import ConfigError

CALLS = ("build", "check", "outline", "targets")


def parse_call(value: str) -> tuple[str, str]:
    """``--call NAME[,format=text|json]`` as buildx takes it: (name, format)."""
    name, _, rest = value.partition(",")
    fmt = "text"
    for item in rest.split(",") if rest else ():
        key, _, val = item.partition("=")
        if key != "format" or val not in ("text", "json", "raw"):
            raise ConfigError(f"--call {value}: unknown option {item!r}",
                              hint="--call NAME[,format=text|json]")
        fmt = "json" if val == "raw" else val
    if name not in CALLS:
        raise ConfigError(f"--call {value}: unknown method {name!r}",
                          hint=f"one of {', '.join(CALLS)}")
    return name, fmt


def _table(rows: list[tuple[str, ...]], padding: int) -> list[str]:
    """Go's tabwriter: each column as wide as its widest cell plus ``padding``; the last
    cell of a line is not padded."""
    widths = [max(len(r[i]) for r in rows) + padding for i in range(len(rows[0]) - 1)]
    return ["".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + r[-1] for r in rows]


def render(name: str, report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2)
    lines: list[str] = []
    if name == "targets":
        rows: list[tuple[str, ...]] = [("TARGET", "DESCRIPTION")]
        for t in report["targets"]:
            label = t.get("name", "")
            if t.get("default"):
                label = f"{label} (default)" if label else "(default)"
            rows.append((label, t.get("description", "")))
        return "\n".join(_table(rows, 1))
    if report.get("name") or report.get("description"):
        head: list[tuple[str, ...]] = [("TARGET:", report.get("name") or "(default)")]
        if report.get("description"):
            head.append(("DESCRIPTION:", report["description"]))
        lines += _table(head, 1) + [""]
    sections = (("args", ("BUILD ARG", "VALUE", "DESCRIPTION"),
                 lambda a: (a["name"], a.get("value", ""), a.get("description", ""))),
                ("secrets", ("SECRET", "REQUIRED"),
                 lambda s: (s["name"], "true" if s.get("required") else "")),
                ("ssh", ("SSH", "REQUIRED"),
                 lambda s: (s["name"], "true" if s.get("required") else "")))
    for key, header, row in sections:
        if report.get(key):
            lines += _table([header] + [row(e) for e in report[key]], 3) + [""]
    return "\n".join(lines)


def echo(name: str, report: dict[str, Any], fmt: str) -> None:
    click.echo(render(name, report, fmt))
