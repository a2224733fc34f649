"""Parser directives: ``# syntax=``, ``# escape=`` and ``# check=`` at the top of a Dockerfile.

BuildKit reads them in two places, with slightly different rules, and both are kept:

- The parser itself (``DirectiveScanner``) looks at each line until the first line that is
  not a directive: an instruction, a blank line, an ordinary comment or an unknown
  ``# key=value``. Only ``escape`` changes parsing. A repeated directive is an error.
- The front end picks the syntax and the lint checks with ``read_directive``, which first
  drops a byte-order mark and a ``#!`` shebang line, and for ``syntax`` also accepts
  ``// syntax=`` lines and a JSON file ``{"syntax": "..."}``. Errors are ignored there.
"""

from __future__ import annotations

import json
import re

from cloche.dockerfile._parse_errors import DirectiveError
from cloche.dockerfile._parse_words import trim_left_space
from cloche.dockerfile.node import Directives

VALID = ("syntax", "escape", "check")
ESCAPE_TOKENS = ("\\", "`")
_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*")


class DirectiveScanner:
    """Feeds lines one at a time; says which are directives until the first one that is not."""

    def __init__(self, prefix: str = "#") -> None:
        self.prefix = prefix
        self.done = False
        self.seen: dict[str, str] = {}

    def feed(self, line: str, lineno: int = 0) -> tuple[str, str] | None:
        """(name, value) when ``line`` is a directive; raises DirectiveError on a repeat."""
        if self.done:
            return None
        if not line.startswith(self.prefix):
            self.done = True
            return None
        m = _DIRECTIVE.fullmatch(trim_left_space(line[len(self.prefix):]))
        if m is None or m.group(1).lower() not in VALID:
            self.done = True
            return None
        name, value = m.group(1).lower(), m.group(2)
        if name in self.seen:
            raise DirectiveError(f"only one {name} parser directive can be used",
                                 directive=name, value=value, line=lineno or None)
        self.seen[name] = value
        if name == "escape" and value not in ESCAPE_TOKENS:
            raise DirectiveError(f"invalid escape token '{value}' does not match ` or \\",
                                 directive=name, value=value, line=lineno or None)
        return name, value


def _lines(text: str) -> list[str]:
    return [ln.removesuffix("\r") for ln in text.split("\n")]


def read_directive(key: str, text: str, *, any_format: bool = False) -> str | None:
    """The value of directive ``key`` as BuildKit's front end detects it, or None."""
    text = text.removeprefix("\ufeff")
    first, _, rest = text.partition("\n")
    if first.startswith("#!"):
        text = rest
    prefixes = ("#", "//") if any_format else ("#",)
    for prefix in prefixes:
        scanner = DirectiveScanner(prefix)
        found: dict[str, str] = {}
        for line in _lines(text):
            if scanner.done:
                break
            try:
                hit = scanner.feed(line)
            except DirectiveError:
                break
            if hit:
                found[hit[0]] = hit[1]
        if key in found:
            return found[key]
    if any_format:
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            return None
        value = doc.get(key) if isinstance(doc, dict) else None
        if isinstance(value, str):
            return value
    return None


def directives_for(text: str, escape: str) -> Directives:
    """The file's directives: ``escape`` as the parser used it, syntax and check as detected."""
    return Directives(syntax=read_directive("syntax", text, any_format=True), escape=escape,
                      check=read_directive("check", text))
