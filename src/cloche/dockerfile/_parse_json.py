"""Exec form: read ``["a", "b"]`` the way Go's ``encoding/json`` does for BuildKit.

Python's ``json`` differs from Go's in ways that change which form an instruction takes:
it accepts ``NaN``/``Infinity``, keeps lone surrogates, and recurses (so deep nesting raises
``RecursionError`` where Go gives a plain error). This reader is iterative: it checks the
whole text against the JSON grammar with Go's depth limit of 10000, rejects numbers that
overflow a float64 (Go reports that as an error too), and decodes strings with invalid
surrogates replaced by U+FFFD, as Go does.

The outcome has three cases, the three BuildKit distinguishes: not valid JSON (``None``: the
instruction falls back to shell form), a valid array with a non-string element
(``NotStringArray``: a syntax error), or the list of strings.
"""

from __future__ import annotations

import json
import re

MAX_DEPTH = 10000

_TOKEN = re.compile(
    r"""[ \t\n\r]*(?:
        (?P<str>"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*")
      | (?P<num>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
      | (?P<lit>true|false|null)
      | (?P<punct>[\[\]{},:])
    )""",
    re.VERBOSE,
)
_SURROGATE = re.compile("[\ud800-\udfff]")


class NotStringArray(Exception):
    """A valid JSON array with an element that is not a string."""


def _decode_string(token: str) -> str:
    return _SURROGATE.sub("\ufffd", json.loads(token))


def _tokens(text: str) -> list[tuple[str, str]] | None:
    """The tokens of ``text``, or None when a character is not part of any JSON token."""
    out: list[tuple[str, str]] = []
    pos = 0
    n = len(text)
    while True:
        m = _TOKEN.match(text, pos)
        if m is None:
            tail = text[pos:]
            return out if tail.strip(" \t\n\r") == "" else None
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
        if pos >= n:
            return out


def parse_json_array(text: str) -> list[str] | None:
    """The strings of a JSON array; None when ``text`` is not valid JSON (Go's rules)."""
    toks = _tokens(text)
    if not toks:
        return None
    # Grammar check with an explicit stack: each frame is "[" or "{" plus what comes next.
    stack: list[list[str]] = []
    top_values: list[tuple[str, str]] = []
    expect = "value"  # value | value_or_end | comma_or_end | key | key_or_end | colon | done
    for kind, tok in toks:
        if expect == "done":
            return None
        if kind == "num" and float(tok) in (float("inf"), float("-inf")):
            return None  # Go: cannot unmarshal number into float64
        is_value_start = kind in ("str", "num", "lit") or tok in ("[", "{")
        if expect in ("value", "value_or_end"):
            if expect == "value_or_end" and tok == "]":
                stack.pop()
                expect = "done" if not stack else "comma_or_end"
                continue
            if not is_value_start:
                return None
            if len(stack) == 1 and stack[0][0] == "[":
                top_values.append((kind, tok))
            if tok in ("[", "{"):
                if len(stack) >= MAX_DEPTH:
                    return None
                stack.append([tok])
                expect = "value_or_end" if tok == "[" else "key_or_end"
                continue
            expect = "done" if not stack else "comma_or_end"
            continue
        if expect in ("key", "key_or_end"):
            if expect == "key_or_end" and tok == "}":
                stack.pop()
                expect = "done" if not stack else "comma_or_end"
                continue
            if kind != "str":
                return None
            expect = "colon"
            continue
        if expect == "colon":
            if tok != ":":
                return None
            expect = "value"
            continue
        # comma_or_end
        closer = "]" if stack[-1][0] == "[" else "}"
        if tok == ",":
            expect = "value" if closer == "]" else "key"
            continue
        if tok != closer:
            return None
        stack.pop()
        expect = "done" if not stack else "comma_or_end"
    if expect != "done":
        return None
    if toks[0][1] != "[":
        return None  # a valid document, but not an array: BuildKit's caller checks "[" first
    if any(kind != "str" for kind, _ in top_values):
        raise NotStringArray
    return [_decode_string(tok) for _, tok in top_values]
