"""Word expansion exactly as BuildKit's shell lexer does it (``frontend/dockerfile/shell``).

This is not a shell: there is no command substitution, no globbing, no arithmetic. It is the
small language BuildKit applies to the arguments of ADD, COPY, ENV, FROM, LABEL... before it
uses them: ``$v``, ``${v}``, the modifiers ``:-`` ``-`` ``:+`` ``+`` ``:?`` ``?``, the pattern
modifiers ``#`` ``##`` ``%`` ``%%`` ``/`` ``//``, single and double quotes, and the escape
character (``\\`` or the one set by ``# escape=``). Its quirks are deliberate: they are what
``docker build`` does, and the conformance tables in ../shared/conformance pin them down.

Errors raise :class:`ShellExpansionError` without a location; the caller (which knows the
instruction) fills it in with ``DockerfileError.with_location``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from cloche.errors import DockerfileError

__all__ = ["ShellExpansionError", "expand_word", "expand_words", "expand_heredoc"]

_EOF = ""
_SPECIAL_PARAMS = frozenset("@*#?-$!0")


class ShellExpansionError(DockerfileError):
    """A word that cannot be expanded: unterminated quote, bad ``${}``, ``${v:?msg}``..."""


def expand_word(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """``word`` after variable expansion and quote removal, as one string (ProcessWord)."""
    return _Lexer(word, env, escape).run()[0]


def expand_words(word: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """``word`` expanded and split into words at unquoted white space (ProcessWords).

    White space that comes from a variable splits too, unless the variable is quoted.
    """
    return _Lexer(word, env, escape).run()[1]


def expand_heredoc(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """A heredoc body with an unquoted delimiter: ``$`` expands, quotes stay literal."""
    return _Lexer(text, env, escape, skip_quotes=True).run()[0]


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch).startswith("L")


def _is_digit(ch: str) -> bool:
    return unicodedata.category(ch) == "Nd"


def _is_space(ch: str) -> bool:
    """Go's unicode.IsSpace: Python's isspace() also counts the separators U+001C-U+001F."""
    return ch.isspace() and ch not in "\x1c\x1d\x1e\x1f"


class _Words:
    """Accumulates words the way BuildKit's wordsStruct does (raw parts never split)."""

    def __init__(self) -> None:
        self.word = ""
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if _is_space(ch):
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.word += ch
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def get(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


@dataclass
class _Lexer:
    source: str
    env: Mapping[str, str]
    escape: str = "\\"
    skip_quotes: bool = False
    raw_escapes: bool = False
    pos: int = 0

    # -- scanner -------------------------------------------------------------------------
    def peek(self) -> str:
        return self.source[self.pos] if self.pos < len(self.source) else _EOF

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    # -- grammar -------------------------------------------------------------------------
    def run(self) -> tuple[str, list[str]]:
        text, words, _ = self.process_until((), raw_escapes=self.raw_escapes)
        return text, words

    def process_until(self, stops: tuple[str, ...], raw_escapes: bool) -> tuple[str, list[str], str]:
        """Process up to (and consuming) one of ``stops``; returns text, words, the stop."""
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            result: list[str] = []
            words = _Words()
            while (ch := self.peek()) != _EOF:
                if ch in stops:
                    self.next()
                    return "".join(result), words.get(), ch
                if ch == "$":
                    value = self.process_dollar()
                    result.append(value)
                    words.add_string(value)
                    continue
                if not self.skip_quotes and ch in "'\"":
                    value = self.process_single_quote() if ch == "'" else self.process_double_quote()
                    result.append(value)
                    words.add_raw_string(value)
                    continue
                ch = self.next()
                if ch == self.escape:
                    if self.raw_escapes:
                        words.add_raw_char(ch)
                        result.append(ch)
                    ch = self.next()
                    if ch == _EOF:
                        break
                    words.add_raw_char(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
            if stops:
                raise ShellExpansionError(
                    f"unexpected end of statement while looking for matching {stops[0]}")
            return "".join(result), words.get(), _EOF
        finally:
            self.raw_escapes = saved

    def process_single_quote(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.next()
            if ch == _EOF:
                raise ShellExpansionError(
                    "unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                return "".join(out)
            out.append(ch)

    def process_double_quote(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.peek()
            if ch == _EOF:
                raise ShellExpansionError(
                    "unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                return "".join(out)
            if ch == "$":
                out.append(self.process_dollar())
                continue
            ch = self.next()
            if ch == self.escape:
                if self.raw_escapes:
                    out.append(ch)
                following = self.peek()
                if following == _EOF:
                    continue  # a lone escape at the very end is dropped
                if following in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def process_name(self) -> str:
        """A variable name: letters, digits and ``_``; or all digits; or one special char."""
        name: list[str] = []
        while (ch := self.peek()) != _EOF:
            if not name and _is_digit(ch):
                while self.peek() != _EOF and _is_digit(self.peek()):
                    name.append(self.next())
                return "".join(name)
            if not name and ch in _SPECIAL_PARAMS:
                return self.next()
            if not (_is_letter(ch) or _is_digit(ch) or ch == "_"):
                break
            name.append(self.next())
        return "".join(name)

    def lookup(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            return self.env[name], True
        return "", False

    def process_dollar(self) -> str:
        self.next()  # the '$'
        if self.peek() != "{":
            name = self.process_name()
            return self.lookup(name)[0] if name else "$"
        self.next()  # the '{'
        ch = self.peek()
        if ch == _EOF:
            raise ShellExpansionError("syntax error: missing '}'")
        if ch in "{}:":
            raise ShellExpansionError("syntax error: bad substitution")
        name = self.process_name()
        ch = self.next()
        modifier = ch
        if ch == "}":
            return self.lookup(name)[0]
        if ch == "/":
            return self.process_replace(name)
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            modifier += ch
        if ch not in ("+", "-", "?", "#", "%"):
            if null_is_unset and ch != _EOF:
                # BuildKit reads the word before it rejects the modifier
                self._read_word()
            raise ShellExpansionError(f"unsupported modifier ({modifier}) in substitution")
        raw = ch in "#%"
        if null_is_unset and raw:
            raise ShellExpansionError(f"unsupported modifier ({modifier}) in substitution")
        word = self._read_word(raw_escapes=raw)
        value, is_set = self.lookup(name)
        empty = not is_set or (null_is_unset and value == "")
        if ch == "-":
            return word if empty else value
        if ch == "+":
            return "" if empty else word
        if ch == "?":
            if not is_set:
                raise ShellExpansionError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise ShellExpansionError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        greedy = word.startswith(ch)
        if greedy:
            word = word[1:]
        return _trim(value, word, suffix=ch == "%", greedy=greedy)

    def _read_word(self, raw_escapes: bool = False) -> str:
        try:
            return self.process_until(("}",), raw_escapes)[0]
        except ShellExpansionError:
            if self.peek() == _EOF:
                raise ShellExpansionError("syntax error: missing '}'") from None
            raise

    def process_replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        try:
            pattern, _, stop = self.process_until(("/", "}"), True)
            replacement = ""
            if stop == "/":
                replacement = self.process_until(("}",), True)[0]
        except ShellExpansionError:
            raise ShellExpansionError("syntax error: missing '}'") from None
        value = self.lookup(name)[0]
        return _replace(value, pattern, replacement, replace_all)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A shell pattern (``*``, ``?``, ``[...]``, ``\\x``) as an anchored regular expression."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
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
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error as err:
        raise ShellExpansionError(f"invalid pattern {pattern!r}: {err}") from None


def _trim(value: str, pattern: str, *, suffix: bool, greedy: bool) -> str:
    regex = _pattern_regex(pattern)
    sizes = range(len(value), -1, -1) if greedy else range(len(value) + 1)
    for size in sizes:
        part = value[len(value) - size:] if suffix else value[:size]
        if regex.fullmatch(part):
            return value[:len(value) - size] if suffix else value[size:]
    return value


def _replace(value: str, pattern: str, replacement: str, replace_all: bool) -> str:
    regex = _pattern_regex(pattern)
    out: list[str] = []
    start = 0
    while start <= len(value):
        for end in range(len(value), start - 1, -1):
            if regex.fullmatch(value, start, end):
                break
        else:
            if start < len(value):
                out.append(value[start])
            start += 1
            continue
        out.append(replacement)
        if end == start:
            if start < len(value):
                out.append(value[start])
            start += 1
        else:
            start = end
        if not replace_all:
            out.append(value[start:])
            return "".join(out)
    return "".join(out)
