"""Heredoc markers (``<<EOF``, ``<<-EOF``, ``<<'EOF'``) on RUN, COPY and ADD lines.

BuildKit finds heredocs by running its shell lexer over the whole instruction line (quotes
and escapes kept raw, variables left alone) and then testing every resulting word against
``^(\\d*)<<(-?)\\s*([^<]*)$``. So ``"<<EOF"`` in quotes is not a heredoc, ``<< EOF`` is, and
``cat<<EOF`` is not (the word does not start with ``<<``). The delimiter word is lexed twice,
with and without quote removal: if quote characters disappear, part of it was quoted and the
body is not expanded.

This module carries a small, purely syntactic copy of that lexer (no environment: every
variable is unset and kept as written) so that the parser does not depend on the expansion
module; it reproduces the lexer's word boundaries, including its quirks, because they decide
which words count as heredoc markers.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from cloche.dockerfile._parse_errors import HeredocError
from cloche.dockerfile._parse_words import GO_SPACES

_HEREDOC_WORD = re.compile(r"([0-9]*)<<(-?)[\t\n\f\r ]*([^<]*)")
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)
_SPECIAL_PARAMS = "@*#?-$!0"
_ESCAPE = "\\"  # BuildKit lexes heredoc lines with a backslash, whatever the escape directive


@dataclass(frozen=True)
class HeredocMarker:
    """A ``<<`` marker found on an instruction line: the body follows the instruction."""

    name: str
    expand: bool
    chomp: bool
    fd: int | None = None


class _LexError(Exception):
    pass


class _WordBuffer:
    """The lexer's shared word buffer (nested ``${...}`` scans reset it, as BuildKit's do)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0

    def reset(self) -> None:
        self.parts = []
        self.length = 0

    def write(self, s: str) -> None:
        self.parts.append(s)
        self.length += len(s)

    def value(self) -> str:
        return "".join(self.parts)


class _Words:
    def __init__(self, buf: _WordBuffer) -> None:
        self.buf = buf
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch in GO_SPACES:
            if self.in_word and self.buf.length:
                self.words.append(self.buf.value())
                self.buf.reset()
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def add_raw(self, s: str) -> None:
        self.buf.write(s)
        self.in_word = True

    def result(self) -> list[str]:
        if self.buf.length:
            self.words.append(self.buf.value())
            self.buf.reset()
            self.in_word = False
        return self.words


def _is_letter(ch: str) -> bool:
    return ch.isalpha()


def _is_digit(ch: str) -> bool:
    return unicodedata.category(ch) == "Nd"


class _Lexer:
    """Word splitting of BuildKit's shell lexer with an empty environment."""

    def __init__(self, text: str, *, raw_quotes: bool, raw_escapes: bool) -> None:
        self.text = text
        self.pos = 0
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.buf = _WordBuffer()

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def words(self) -> list[str]:
        return self.stop_on("", self.raw_escapes)[1]

    def stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        result: list[str] = []
        self.buf.reset()
        words = _Words(self.buf)
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            while self.peek():
                ch = self.peek()
                if stop and ch == stop:
                    self.next()
                    return "".join(result), words.result()
                if ch in "$<'\"":
                    tmp = {"$": self.dollar, "<": self.angle, "'": self.single_quote,
                           '"': self.double_quote}[ch]()
                    result.append(tmp)
                    if ch == "$":
                        words.add_string(tmp)
                    else:
                        words.add_raw(tmp)
                    continue
                ch = self.next()
                if ch == _ESCAPE:
                    if self.raw_escapes:
                        words.add_raw(ch)
                        result.append(ch)
                    ch = self.next()
                    if not ch:
                        break
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
            if stop:
                raise _LexError(f"unexpected end of statement while looking for matching {stop}")
            return "".join(result), words.result()
        finally:
            self.raw_escapes = saved

    def single_quote(self) -> str:
        opening = self.next()
        out = [opening] if self.raw_quotes else []
        while True:
            ch = self.next()
            if not ch:
                raise _LexError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        opening = self.next()
        out = [opening] if self.raw_quotes else []
        while True:
            ch = self.peek()
            if not ch:
                raise _LexError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == _ESCAPE:
                if self.raw_escapes:
                    out.append(ch)
                following = self.peek()
                if not following:
                    continue
                if following in ('"', "$", _ESCAPE):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        out: list[str] = []
        while self.peek():
            ch = self.peek()
            if not out and _is_digit(ch):
                while self.peek() and _is_digit(self.peek()):
                    out.append(self.next())
                return "".join(out)
            if not out and ch in _SPECIAL_PARAMS:
                return self.next()
            if not (_is_letter(ch) or _is_digit(ch) or ch == "_"):
                break
            out.append(self.next())
        return "".join(out)

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            return "$" + name
        self.next()
        if not self.peek():
            raise _LexError("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise _LexError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        mods = ch
        if ch == "}":
            return "${" + name + "}"
        null_is_unset = ch == ":"
        if null_is_unset:
            ch = self.next()
            mods += ch or "\ufffd"
        if null_is_unset or (ch and ch in "+-?#%"):
            raw = bool(ch) and ch in "#%"
            if null_is_unset and raw:
                raise _LexError(f"unsupported modifier ({mods}) in substitution")
            word = self._until("}", raw)
            return "${" + name + mods + word + "}"
        if ch == "/":
            if self.peek() == "/":
                self.next()
            pattern = self._until("/", True)
            replacement = self._until("}", True)
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        raise _LexError(f"unsupported modifier ({mods}) in substitution")

    def _until(self, stop: str, raw: bool) -> str:
        try:
            return self.stop_on(stop, raw)[0]
        except _LexError:
            if not self.peek():
                raise _LexError(f"syntax error: missing '{stop}'") from None
            raise

    def angle(self) -> str:
        self.next()
        if self.peek() != "<":
            return "<"
        self.next()
        spaces: list[str] = []
        while self.peek() in ("\t", "\r", " ") and self.peek():
            spaces.append(self.next())
        return "<<" + "".join(spaces)


def parse_heredoc_word(word: str) -> HeredocMarker | None:
    """The heredoc a ``<<WORD`` token opens, or None when the token is not a heredoc marker.

    Raises HeredocError when the delimiter cannot be lexed (an unmatched quote).
    """
    m = _HEREDOC_WORD.fullmatch(word)
    if m is None or not m.group(3):
        return None
    fd_text, chomp, rest = m.groups()
    try:
        plain = _Lexer(rest, raw_quotes=False, raw_escapes=False).words()
        if len(plain) != 1:
            return None
        raw = _Lexer(rest, raw_quotes=True, raw_escapes=False).words()
    except _LexError as e:
        raise HeredocError(f"invalid heredoc delimiter {rest!r}: {e}", name=rest) from None
    if len(raw) != len(plain):
        raise HeredocError(f"internal lexing of heredoc produced inconsistent results: {rest}",
                           name=rest)
    name = plain[0]
    quotes = name.count("'") + name.count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    return HeredocMarker(name=name, expand=quotes == raw_quotes, chomp=chomp == "-",
                         fd=_file_descriptor(fd_text))


def _file_descriptor(digits: str) -> int | None:
    """The ``3`` of ``3<<EOF``; 0 when it overflows, as Go's ignored ParseUint error gives."""
    if not digits:
        return None
    return int(digits) if len(digits) <= 19 else 0


def heredocs_in_line(line: str) -> list[HeredocMarker]:
    """Every heredoc marker of an instruction line, in order (none if the line does not lex)."""
    try:
        words = _Lexer(line, raw_quotes=True, raw_escapes=True).words()
    except _LexError:
        return []
    found = []
    for word in words:
        marker = parse_heredoc_word(word)
        if marker is not None:
            found.append(marker)
    return found


def chomp_tabs(content: str) -> str:
    """Remove leading tabs from every line (the body of a ``<<-`` heredoc)."""
    return _LEADING_TABS.sub("", content)
