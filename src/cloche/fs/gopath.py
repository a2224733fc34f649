"""Go's path rules, exactly: ``path.Clean`` (``go_clean``) and ``path/filepath.Match``.

Dockerfile paths are cleaned and matched by Go code in BuildKit (WORKDIR, COPY/ADD sources
and destinations, .dockerignore, RUN's working directory), so cloche applies Go's rules, not
Python's ``posixpath.normpath`` or ``fnmatch``, which differ at the edges.

``go_clean`` is ``path.Clean``: lexical, a leading ``..`` of a relative path is kept, ``""``
becomes ``.`` and a leading ``//`` is folded (POSIX ``normpath`` keeps it).

``match`` is ``filepath.Match``, for COPY/ADD wildcards and --exclude.

Dockerfile sources are matched one path component at a time with Go's ``filepath.Match``
(BuildKit walks the context and calls it), so the rules must be Go's, not Python's ``fnmatch``:

- ``*`` matches any run of characters except ``/``; ``?`` matches one character except ``/``;
- ``[...]`` is a non-empty class of characters and ranges ``lo-hi``; ``[^...]`` negates it
  (a class, negated or not, may match ``/``: Go checks the separator only for ``*`` and ``?``);
- ``\\c`` matches ``c`` literally, inside and outside classes;
- a malformed pattern (unclosed ``[``, empty class, ``-`` or ``]`` where a character is expected,
  a trailing ``\\``) is ``ErrBadPattern`` whatever the name is; Go (since 1.16) checks the whole
  pattern, so we validate it before matching.

Patterns are compiled once (cached) into tokens and matched by dynamic programming, which
needs no backtracking and handles ranges with ``lo > hi`` (they match nothing, as in Go).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from functools import lru_cache

from cloche.errors import ClocheError

__all__ = ["BadPatternError", "compile_pattern", "go_clean", "has_wildcards", "match", "Pattern"]


def go_clean(path: str) -> str:
    """Go's ``path.Clean``: lexical, keeps a leading ``..`` of a relative path, ``""`` -> ``.``."""
    if path == "":
        return "."
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):  # normpath keeps a POSIX '//' prefix; Go does not
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


class BadPatternError(ClocheError, ValueError):
    """A pattern Go's filepath.Match would reject with ErrBadPattern."""

    def __init__(self, pattern: str, reason: str) -> None:
        super().__init__(f"syntax error in pattern {pattern!r}: {reason}")
        self.pattern = pattern
        self.reason = reason


# Token kinds: a literal character, '?', '*', or a character class.
_LIT, _ANY, _STAR, _CLASS = range(4)


@dataclass(frozen=True)
class _Token:
    kind: int
    char: str = ""
    negated: bool = False
    ranges: tuple[tuple[str, str], ...] = ()

    def accepts(self, c: str) -> bool:
        if self.kind == _LIT:
            return c == self.char
        if self.kind == _ANY:
            return c != "/"
        hit = any(lo <= c <= hi for lo, hi in self.ranges)
        return hit != self.negated


@dataclass(frozen=True)
class Pattern:
    """A validated Go glob pattern; ``matches(name)`` is ``filepath.Match(pattern, name)``."""

    text: str
    tokens: tuple[_Token, ...]

    def matches(self, name: str) -> bool:
        tokens = self.tokens
        # reach[j]: the first i tokens can match name[:j]
        reach = [False] * (len(name) + 1)
        reach[0] = True
        for tok in tokens:
            nxt = [False] * (len(name) + 1)
            if tok.kind == _STAR:
                running = False
                for j in range(len(name) + 1):
                    if reach[j]:
                        running = True
                    elif j > 0 and name[j - 1] == "/":
                        running = False
                    nxt[j] = running
            else:
                for j in range(len(name)):
                    if reach[j] and tok.accepts(name[j]):
                        nxt[j + 1] = True
            reach = nxt
            if not any(reach):
                return False
        return reach[len(name)]


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    """One character of a class at ``i`` (Go's getEsc); returns it and the next index."""
    if i >= len(pattern) or pattern[i] in "-]":
        raise BadPatternError(pattern, "expected a character in a [...] class")
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise BadPatternError(pattern, "trailing backslash in a [...] class")
    return pattern[i], i + 1


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> Pattern:
    """Validate and compile ``pattern``; raises BadPatternError when Go would."""
    tokens: list[_Token] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if not tokens or tokens[-1].kind != _STAR:
                tokens.append(_Token(_STAR))
            i += 1
        elif c == "?":
            tokens.append(_Token(_ANY))
            i += 1
        elif c == "\\":
            if i + 1 >= n:
                raise BadPatternError(pattern, "trailing backslash")
            tokens.append(_Token(_LIT, pattern[i + 1]))
            i += 2
        elif c == "[":
            i += 1
            negated = i < n and pattern[i] == "^"
            if negated:
                i += 1
            ranges: list[tuple[str, str]] = []
            while True:
                if i < n and pattern[i] == "]" and ranges:
                    i += 1
                    break
                lo, i = _class_char(pattern, i)
                hi = lo
                if i < n and pattern[i] == "-":
                    hi, i = _class_char(pattern, i + 1)
                ranges.append((lo, hi))
            tokens.append(_Token(_CLASS, negated=negated, ranges=tuple(ranges)))
        else:
            tokens.append(_Token(_LIT, c))
            i += 1
    return Pattern(pattern, tuple(tokens))


def match(pattern: str, name: str) -> bool:
    """``filepath.Match(pattern, name)`` on Unix: the whole name must match."""
    return compile_pattern(pattern).matches(name)


def has_wildcards(text: str) -> bool:
    """Whether ``text`` holds an unescaped ``*``, ``?`` or ``[`` (BuildKit's containsWildcards)."""
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] in "*?[":
            return True
        i += 1
    return False
