""".dockerignore read and matched as BuildKit does (moby/patternmatcher and its ignorefile).

Reading (``parse_dockerignore``): a UTF-8 BOM on the first line is dropped; a line whose
first character is ``#`` is a comment (``#`` elsewhere is an ordinary character); lines are
trimmed and blank ones skipped; ``!`` marks an exception; every pattern goes through Go's
``filepath.Clean`` and loses a leading ``/``, so ``/a/b/``, ``a/b`` and ``./a//b`` are one rule.

Matching (``PatternMatcher.matches``): patterns are compiled the way patternmatcher compiles
them to regular expressions (``*`` and ``?`` never cross ``/``, ``**`` spans any number of
directories, ``[...]`` classes and ``\\`` escapes as in Go) and evaluated in order, the last
matching line winning; a path is also excluded when one of its parent directories matches.
An excluded directory is still walked when an exception could re-include something below
it (``may_include_below``), as BuildKit's fsutil walker does.

``<Dockerfile>.dockerignore`` beside the Dockerfile takes precedence over the context's
``.dockerignore``; the rules apply to the main build context only, never to ``COPY --from``.
"""

from __future__ import annotations

import io
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from cloche.errors import ClocheError
from cloche.fs.gopath import BadPatternError, compile_pattern, go_clean
from cloche.fs.gopath import match as go_match
from cloche.fs.regular import read_regular_in_root, regular_in_root

__all__ = ["DockerignoreError", "IgnorePattern", "PatternMatcher", "find_ignore_file",
           "load_matcher", "parse_dockerignore"]

_BOM = "\ufeff"
_EXACT, _PREFIX, _SUFFIX, _REGEX = "exact", "prefix", "suffix", "regex"


class DockerignoreError(ClocheError, ValueError):
    """A .dockerignore line that cannot be used; names the file and the line."""

    def __init__(self, message: str, *, file: str | None, line: int | None) -> None:
        where = f"{file or '.dockerignore'}" + (f":{line}" if line else "")
        super().__init__(f"{where}: {message}")
        self.file = file
        self.line = line


def parse_dockerignore(text: str) -> list[tuple[int, str]]:
    """``(line number, pattern)`` for each rule of a .dockerignore (BuildKit's ReadAll)."""
    out: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if number == 1 and raw.startswith(_BOM):
            raw = raw[1:]
        if raw.startswith("#"):
            continue
        pattern = raw.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append((number, ("!" + pattern) if invert else pattern))
    return out


def _compile(pattern: str) -> tuple[str, re.Pattern[str] | None]:
    """patternmatcher's compile: a match kind and, for wildcards, a regular expression."""
    kind = _EXACT
    regex = "^"
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        ch = pattern[i]
        if in_class:
            if ch == "\\" and i + 1 < n:
                regex += "\\" + pattern[i + 1]
                i += 2
                continue
            if ch == "]":
                in_class = False
                regex += "]"
            elif ch == "[":
                regex += "\\["
            else:
                regex += ch
            i += 1
            continue
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                first = i == 0
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                if i >= n:
                    if kind == _EXACT:
                        kind = _PREFIX
                    else:
                        regex += ".*"
                        kind = _REGEX
                else:
                    regex += "(.*/)?"
                    kind = _REGEX
                if first:
                    kind = _SUFFIX
                continue
            regex += "[^/]*"
            kind = _REGEX
        elif ch == "?":
            regex += "[^/]"
            kind = _REGEX
        elif ch == "\\":
            if i + 1 < n:
                regex += re.escape(pattern[i + 1])
                i += 1
            else:
                regex += "\\\\"
        elif ch == "[":
            in_class = True
            regex += "["
            if i + 1 < n and pattern[i + 1] == "^":
                regex += "^"
                i += 1
            kind = _REGEX
        else:
            regex += re.escape(ch)
        i += 1
    if kind != _REGEX:
        return kind, None
    try:
        return kind, re.compile(regex + "$", re.DOTALL)
    except re.error as e:
        raise BadPatternError(pattern, str(e)) from e


@dataclass(frozen=True)
class IgnorePattern:
    """One cleaned rule; ``exclusion`` is True for a ``!`` exception."""

    text: str
    exclusion: bool
    line: int | None = None
    kind: str = field(default=_EXACT, compare=False)
    regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, rule: str, *, line: int | None = None, file: str | None = None) -> IgnorePattern:
        rule = rule.strip()
        exclusion = rule.startswith("!")
        body = go_clean(rule[1:] if exclusion else rule)
        if exclusion and not rule[1:]:
            raise DockerignoreError('illegal exclusion pattern: "!"', file=file, line=line)
        try:
            compile_pattern(body)  # Go's filepath.Match syntax check, as patternmatcher does
            kind, regex = _compile(body)
        except BadPatternError as e:
            raise DockerignoreError(e.message, file=file, line=line) from e
        return cls(body, exclusion, line, kind, regex)

    def match(self, path: str) -> bool:
        if self.kind == _EXACT:
            return path == self.text
        if self.kind == _PREFIX:
            return path.startswith(self.text[:-2])
        if self.kind == _SUFFIX:
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        assert self.regex is not None
        return self.regex.match(path) is not None


@dataclass(frozen=True)
class PatternMatcher:
    """An ordered list of rules; the empty matcher excludes nothing."""

    patterns: tuple[IgnorePattern, ...] = ()
    source: str | None = None

    @classmethod
    def from_rules(cls, rules: list[str] | tuple[str, ...], *, source: str | None = None) -> PatternMatcher:
        """From rules already read (``--exclude`` values, or lines of an ignore file)."""
        return cls(tuple(IgnorePattern.parse(r, file=source) for r in rules if r.strip()), source)

    @classmethod
    def from_text(cls, text: str, *, source: str | None = None) -> PatternMatcher:
        return cls(tuple(IgnorePattern.parse(rule, line=n, file=source)
                         for n, rule in parse_dockerignore(text)), source)

    @property
    def has_exclusions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    def matches(self, path: str) -> bool:
        """Whether ``path`` (relative, ``/``-separated) is excluded (MatchesOrParentMatches)."""
        path = go_clean(path.strip("/"))
        parent = posixpath.dirname(path)
        parents = parent.split("/") if parent else []
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            hit = pattern.match(path)
            if not hit:
                for i in range(len(parents)):
                    if pattern.match("/".join(parents[: i + 1])):
                        hit = True
                        break
            if hit:
                matched = not pattern.exclusion
        return matched

    def may_include_below(self, directory: str) -> bool:
        """Whether an exception could re-include a path below an excluded ``directory``."""
        parts = go_clean(directory.strip("/")).split("/")
        for pattern in self.patterns:
            if not pattern.exclusion:
                continue
            pdirs = pattern.text.split("/")
            for i, part in enumerate(parts):
                if i >= len(pdirs) or "**" in pdirs[i]:
                    break
                try:
                    if not go_match(pdirs[i], part):
                        break
                except BadPatternError:
                    break
            else:
                if len(pdirs) > len(parts):
                    return True
                continue
            if i < len(pdirs) and "**" in pdirs[i]:
                return True
        return False


def find_ignore_file(context_dir: Path, dockerfile: Path | None = None) -> Path | None:
    """``<Dockerfile>.dockerignore`` beside the Dockerfile if present, else ``.dockerignore``.

    Each is looked up inside its own folder (the Dockerfile's, the context): a symlink is
    followed as BuildKit follows it, never out of that folder (a link to a host file counts
    as no ignore file). The path returned is the one as named, for messages.
    """
    if dockerfile is not None:
        name = dockerfile.name + ".dockerignore"
        if regular_in_root(dockerfile.parent, name) is not None:
            return dockerfile.parent / name
    if regular_in_root(context_dir, ".dockerignore") is not None:
        return context_dir / ".dockerignore"
    return None


def load_matcher(context_dir: Path, dockerfile: Path | None = None) -> PatternMatcher:
    """The ignore rules of a context (empty when it has no ignore file)."""
    found = find_ignore_file(context_dir, dockerfile)
    if found is None:
        return PatternMatcher()
    data = read_regular_in_root(found.parent, found.name, what=str(found))
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace").read()
    return PatternMatcher.from_text(text, source=str(found))
