"""Word expansion exactly as BuildKit's shell lexer does it (``frontend/dockerfile/shell``).

This is not a shell: there is no command substitution, no globbing, no arithmetic. It is the
small language BuildKit applies to the arguments of ADD, COPY, ENV, FROM, LABEL... before it
uses them: ``$v``, ``${v}``, the modifiers ``:-`` ``-`` ``:+`` ``+`` ``:?`` ``?``, the pattern
modifiers ``#`` ``##`` ``%`` ``%%`` ``/`` ``//``, single and double quotes, and the escape
character (``\\`` or the one set by ``# escape=``). Its quirks are deliberate: they are what
``docker build`` does, and the conformance tables in ../shared/conformance pin them down.

Errors raise :class:`ShellExpansionError` without a location; the caller (which knows the
instruction) fills it in with ``DockerfileError.with_location``.

Unlike BuildKit, an expanded word is bounded (``MAX_WORD``, 1 MiB): ``ENV A=${A}${A}`` doubles
a value at each line, so thirty such lines would ask for gigabytes. A word whose own text is
longer may keep its length; only expansion cannot grow it past the bound. Everything here is
linear in the text it builds: words are collected as lists of pieces (``str +=`` on an
attribute copies the whole string each time), and the pattern modifiers use ``_glob``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cloche.dockerfile._glob import Glob, PatternError
from cloche.errors import DockerfileError

__all__ = ["MAX_WORD", "ShellExpansionError", "expand_word", "expand_words", "expand_heredoc"]

_EOF = ""
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
MAX_WORD = 1 << 20  # characters an expansion may produce (a longer literal word keeps its own)
_GO_SPACES = re.compile(r"[^\S\x1c-\x1f]+")  # runs of Go's unicode.IsSpace (see _is_space)


class ShellExpansionError(DockerfileError):
    """A word that cannot be expanded: unterminated quote, bad ``${}``, ``${v:?msg}``..."""


def expand_word(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """``word`` after variable expansion and quote removal, as one string (ProcessWord)."""
    return _Lexer(word, env, escape, limit=max(MAX_WORD, len(word))).run()[0]


def expand_words(word: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """``word`` expanded and split into words at unquoted white space (ProcessWords).

    White space that comes from a variable splits too, unless the variable is quoted.
    """
    return _Lexer(word, env, escape, limit=max(MAX_WORD, len(word))).run()[1]


def expand_heredoc(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """A heredoc body with an unquoted delimiter: ``$`` expands, quotes stay literal."""
    return _Lexer(text, env, escape, skip_quotes=True, limit=max(MAX_WORD, len(text))).run()[0]


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch).startswith("L")


def _is_digit(ch: str) -> bool:
    return unicodedata.category(ch) == "Nd"


def _is_space(ch: str) -> bool:
    """Go's unicode.IsSpace: Python's isspace() also counts the separators U+001C-U+001F."""
    return ch.isspace() and ch not in "\x1c\x1d\x1e\x1f"


class _Words:
    """Accumulates words the way BuildKit's wordsStruct does (raw parts never split).

    The current word is a list of pieces, joined when it ends: linear in what it collects."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.words: list[str] = []

    def _end_word(self) -> None:
        if self.parts:
            word = "".join(self.parts)
            self.parts = []
            if word:
                self.words.append(word)

    def add_char(self, ch: str) -> None:
        if _is_space(ch):
            self._end_word()
        else:
            self.parts.append(ch)

    def add_raw_char(self, ch: str) -> None:
        self.parts.append(ch)

    def add_string(self, text: str) -> None:
        first, *rest = _GO_SPACES.split(text)
        self.parts.append(first)
        for piece in rest:  # a run of white space came before each of these
            self._end_word()
            self.parts.append(piece)

    def add_raw_string(self, text: str) -> None:
        self.parts.append(text)

    def get(self) -> list[str]:
        self._end_word()
        return self.words


@dataclass
class _Lexer:
    source: str
    env: Mapping[str, str]
    escape: str = "\\"
    skip_quotes: bool = False
    raw_escapes: bool = False
    pos: int = 0
    limit: int = MAX_WORD

    def grow(self, size: int) -> int:
        """``size`` (what one buffer holds), checked against the bound of an expanded word."""
        if size > self.limit:
            raise ShellExpansionError(
                f"expanded word is larger than 1 MiB ({MAX_WORD} characters)",
                hint="a variable that repeats itself (ENV A=${A}${A}) doubles at each line; "
                     "cloche bounds an expanded word where BuildKit has no bound")
        return size

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
            size = 0
            words = _Words()
            while (ch := self.peek()) != _EOF:
                if ch in stops:
                    self.next()
                    return "".join(result), words.get(), ch
                if ch == "$":
                    value = self.process_dollar()
                    size = self.grow(size + len(value))
                    result.append(value)
                    words.add_string(value)
                    continue
                if not self.skip_quotes and ch in "'\"":
                    value = self.process_single_quote() if ch == "'" else self.process_double_quote()
                    size = self.grow(size + len(value))
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
                size += 1
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
        size = 0
        while True:
            ch = self.peek()
            if ch == _EOF:
                raise ShellExpansionError(
                    "unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                return "".join(out)
            if ch == "$":
                value = self.process_dollar()
                size = self.grow(size + len(value))
                out.append(value)
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
            size += 1

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
        return _trim(value, _glob(word), suffix=ch == "%", greedy=greedy)

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
        return _replace(value, _glob(pattern), replacement, replace_all, self.grow)


def _glob(pattern: str) -> Glob:
    try:
        return Glob(pattern)
    except PatternError as err:
        raise ShellExpansionError(str(err)) from None


def _trim(value: str, glob: Glob, *, suffix: bool, greedy: bool) -> str:
    """``${v#p}`` (prefix) or ``${v%p}`` (suffix), shortest or (greedy) longest match."""
    if suffix:
        size = glob.reversed().match(value[::-1], 0, longest=greedy)
        return value if size is None else value[:len(value) - size]
    end = glob.match(value, 0, longest=greedy)
    return value if end is None else value[end:]


def _replace(value: str, glob: Glob, replacement: str, replace_all: bool,
             grow: Callable[[int], int]) -> str:
    """``${v/p/r}`` and ``${v//p/r}``: leftmost, longest matches; an empty match is replaced
    and the next character kept. ``grow`` bounds the result as it is built."""
    out: list[str] = []
    size = 0
    start = 0
    while start <= len(value):
        found = glob.search(value, start)
        if found is None:
            out.append(value[start:])
            break
        begin, end = found
        out.append(value[start:begin])
        out.append(replacement)
        size = grow(size + begin - start + len(replacement))
        if end == begin:
            if begin < len(value):
                out.append(value[begin])
                size += 1
            start = begin + 1
        else:
            start = end
        if not replace_all:
            out.append(value[start:])
            break
    return "".join(out)
