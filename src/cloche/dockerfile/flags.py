"""Instruction flags (``--from=x``, ``--link``...) validated the way BuildKit's BFlags does it.

Each instruction declares the flags it accepts and their kind: a string (``--chown=1:1``, once),
a repeatable string (``--mount``, ``--exclude``) or a boolean (``--link``, ``--link=false``).
Anything else is a :class:`DockerfileError` that points at the flag in the source line, with a
"did you mean" hint, because a silently ignored flag is a build that does something else.
This module also holds the small location helper the other front-end modules share.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cloche.dockerfile.node import Node, SyntaxTree
from cloche.errors import DockerfileError, did_you_mean

__all__ = ["FlagKind", "FlagValues", "parse_flags", "error_at", "parse_duration"]


class FlagKind(enum.Enum):
    STRING = "string"
    STRINGS = "strings"
    BOOL = "bool"


@dataclass(frozen=True)
class FlagValues:
    """The flags given to one instruction, by name (without ``--``)."""

    values: Mapping[str, str | bool | tuple[str, ...]]

    def string(self, name: str) -> str | None:
        value = self.values.get(name)
        return value if isinstance(value, str) else None

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.values.get(name, ())
        return value if isinstance(value, tuple) else ()

    def boolean(self, name: str) -> bool:
        return self.values.get(name) is True


def error_at(
    node: Node, tree: SyntaxTree | None, message: str, *, needle: str | None = None,
    hint: str | None = None, error: type[DockerfileError] = DockerfileError,
) -> DockerfileError:
    """An error located at ``node``; the column is where ``needle`` appears, if it does."""
    line, column = node.start_line or None, None
    source = tree.source_line(node.start_line) if tree and node.start_line else None
    if tree and needle:
        for number in range(node.start_line, max(node.end_line, node.start_line) + 1):
            text = tree.source_line(number)
            if text is not None and needle in text:
                line, column, source = number, text.index(needle) + 1, text
                break
    elif source is not None and source.strip():
        column = len(source) - len(source.lstrip()) + 1
    return error(message, file=tree.file if tree else None, line=line, column=column,
                 source_line=source, hint=hint)


def parse_flags(
    node: Node, allowed: Mapping[str, FlagKind], tree: SyntaxTree | None = None,
) -> FlagValues:
    """Validate ``node.flags`` against ``allowed``; returns their values by name."""
    values: dict[str, str | bool | tuple[str, ...]] = {}
    keyword = node.keyword.upper()
    for raw in node.flags:
        if not raw.startswith("--"):
            raise error_at(node, tree, f"{keyword}: arg should start with -- : {raw}", needle=raw)
        if raw == "--":
            break
        name, sep, value = raw[2:].partition("=")
        kind = allowed.get(name)
        if kind is None:
            choices = ["--" + n for n in allowed]
            hint = did_you_mean("--" + name, choices) if choices else None
            if hint is None:
                hint = (f"{keyword} accepts {', '.join(sorted(choices))}" if choices
                        else f"{keyword} takes no flags")
            raise error_at(node, tree, f"unknown flag for {keyword}: --{name}", needle=raw,
                           hint=hint)
        if name in values and kind is not FlagKind.STRINGS:
            raise error_at(node, tree, f"duplicate flag specified: --{name}", needle=raw)
        if kind is FlagKind.BOOL:
            if sep and value == "":
                raise error_at(node, tree, f"missing a value on flag: --{name}", needle=raw)
            lowered = value.lower()
            if lowered not in ("", "true", "false"):
                raise error_at(node, tree,
                               f"expecting boolean value for flag --{name}, not: {value}",
                               needle=raw)
            values[name] = lowered != "false"
        elif not sep:
            raise error_at(node, tree, f"missing a value on flag: --{name}", needle=raw,
                           hint=f"write --{name}=VALUE")
        elif kind is FlagKind.STRINGS:
            previous = values.get(name, ())
            assert isinstance(previous, tuple)
            values[name] = previous + (value,)
        else:
            values[name] = value
    return FlagValues(values)


_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
                   "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> int:
    """A Go duration (``1m30s``, ``1.5h``, ``300ms``, ``0``) in nanoseconds; ValueError if bad."""
    body = text
    sign = 1
    if body[:1] in "+-" and body:
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if not match or match.group(1) in ("", "."):
            raise ValueError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return sign * int(round(total))
