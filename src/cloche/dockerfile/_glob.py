"""Shell patterns for the ``${v#p}`` ``${v%p}`` ``${v/p/r}`` modifiers, matched in linear passes.

A pattern (``*``, ``?``, ``[...]``, ``\\x``, literals) is read as fixed-width *segments*
separated by stars. The first segment is anchored at the start of a match, the last at its
end, and the ones between can go anywhere in order. Placing each middle segment at its
earliest occurrence after the previous one gives the earliest possible end for them all, so:

- the shortest match starting at ``i`` ends at the earliest occurrence of the last segment
  after the greedy placement; the longest ends at its latest occurrence (found by searching
  the reversed value with the reversed segment);
- the leftmost match starts at the earliest occurrence of the first segment (or right where
  the search starts, for a pattern that begins with a star): if the rest does not fit after
  it, it fits after no later start either.

Each step is one forward ``re`` search of a star-free regular expression, which cannot
backtrack catastrophically. The obvious way (a ``.*`` regular expression tried at every start
and every length, as this module replaced) is quadratic to exponential, and ``${A%%*b}`` on a
long value never finished. Suffix modifiers match the reversed pattern on the reversed value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Glob", "PatternError"]

_STAR = None


class PatternError(ValueError):
    """A pattern whose ``[...]`` class is not a valid character class (the shell lexer
    re-raises it as its ShellExpansionError)."""


def _tokens(pattern: str) -> list[str | None]:
    """One regular expression per pattern character (each matches exactly one character,
    and stands alone: a class is checked on its own), or ``_STAR`` for ``*``. A ``[``
    without a ``]`` two characters on is a literal."""
    out: list[str | None] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if not out or out[-1] is not _STAR:
                out.append(_STAR)
        elif ch == "?":
            out.append(".")
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                token = "[" + body.replace("\\", "\\\\") + "]"
                try:  # "[!]" is "[^]", which would run on into the next class
                    re.compile(token)
                except re.error as err:
                    raise PatternError(f"invalid pattern {pattern!r}: {err}") from None
                out.append(token)
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return out


@dataclass(frozen=True)
class _Segment:
    regex: re.Pattern[str]
    width: int

    def at(self, value: str, pos: int) -> bool:
        return self.width == 0 or self.regex.match(value, pos) is not None

    def first(self, value: str, pos: int, endpos: int | None = None) -> int | None:
        """The earliest start >= ``pos`` of an occurrence ending at or before ``endpos``."""
        if self.width == 0:
            return pos if pos <= (len(value) if endpos is None else endpos) else None
        found = self.regex.search(value, pos, len(value) if endpos is None else endpos)
        return None if found is None else found.start()


def _segments(tokens: list[str | None], pattern: str) -> list[_Segment]:
    runs: list[list[str]] = [[]]
    for token in tokens:
        if token is _STAR:
            runs.append([])
        else:
            runs[-1].append(token)
    try:
        return [_Segment(re.compile("".join(run), re.DOTALL), len(run)) for run in runs]
    except re.error as err:
        raise PatternError(f"invalid pattern {pattern!r}: {err}") from None


class Glob:
    """A compiled shell pattern; see the module docstring for the method."""

    def __init__(self, pattern: str) -> None:
        tokens = _tokens(pattern)
        self._segs = _segments(tokens, pattern)
        self._rsegs = _segments(tokens[::-1], pattern)[::-1]  # segment i, reversed
        self._cache: tuple[str, str] | None = None

    def reversed(self) -> Glob:
        """The pattern that matches the reversed strings (for suffix modifiers)."""
        other = Glob.__new__(Glob)
        other._segs = self._rsegs[::-1]
        other._rsegs = self._segs[::-1]
        other._cache = None
        return other

    def _middle(self, value: str, start: int) -> int | None:
        """Where the last segment may start at the earliest, for a match starting at
        ``start`` (None: no match starts there)."""
        segs = self._segs
        if not segs[0].at(value, start):
            return None
        pos = start + segs[0].width
        for seg in segs[1:-1]:
            found = seg.first(value, pos)
            if found is None:
                return None
            pos = found + seg.width
        return pos

    def _reversed_value(self, value: str) -> str:
        """``value[::-1]``, kept for the next call (``//`` asks again for the same value)."""
        if self._cache is None or self._cache[0] is not value:
            self._cache = (value, value[::-1])
        return self._cache[1]

    def match(self, value: str, start: int, *, longest: bool) -> int | None:
        """The end of the shortest (or longest) match that starts at ``start``, or None."""
        segs = self._segs
        if len(segs) == 1:
            return start + segs[0].width if segs[0].at(value, start) else None
        pos = self._middle(value, start)
        if pos is None:
            return None
        last, rlast = segs[-1], self._rsegs[-1]
        if not longest:
            found = last.first(value, pos)
            return None if found is None else found + last.width
        if last.width == 0:
            return len(value)
        # the latest occurrence starting at or after pos: the earliest of the reversed
        # segment in the reversed value that ends at or before len(value) - pos
        found = rlast.first(self._reversed_value(value), 0, len(value) - pos)
        return None if found is None else len(value) - found

    def search(self, value: str, pos: int) -> tuple[int, int] | None:
        """The leftmost match starting at or after ``pos``, longest at that start."""
        first = self._segs[0]
        start = first.first(value, pos) if len(self._segs) == 1 or first.width else pos
        if start is None:
            return None
        end = self.match(value, start, longest=True)
        return None if end is None else (start, end)
