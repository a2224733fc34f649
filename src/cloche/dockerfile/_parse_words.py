"""Go-compatible text primitives for the parser: whitespace, word splitting, builder flags.

BuildKit's parser is written against Go's ``unicode.IsSpace``, ``strings.TrimSpace`` and a
regexp whose ``[\\t\\v\\f\\r ]`` class is narrower than Python's ``str.isspace``. Using Python's
notion would split or trim lines differently on unusual characters, so these helpers pin the
Go definitions down in one place. ``parse_words`` and ``extract_flags`` follow BuildKit's word
scanners state for state, because quirks there (quotes kept, an escape at the end dropped)
show up in every parse result.

One deliberate difference: BuildKit scans builder flags byte by byte and so turns non-ASCII
flag values into mojibake; here flags are scanned character by character.
"""

from __future__ import annotations

import re

# unicode.IsSpace: the Latin-1 spaces plus the Unicode White_Space property.
GO_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# BuildKit's reWhitespace: `[\t\v\f\r ]+` (no newline, no Unicode spaces).
RE_WHITESPACE = re.compile(r"[\t\v\f\r ]+")


def is_space(ch: str) -> bool:
    """Go's ``unicode.IsSpace`` for one character."""
    return ch in GO_SPACES


def trim_left_space(s: str) -> str:
    """Go's ``strings.TrimLeftFunc(s, unicode.IsSpace)``."""
    i = 0
    while i < len(s) and s[i] in GO_SPACES:
        i += 1
    return s[i:]


def trim_space(s: str) -> str:
    """Go's ``strings.TrimSpace``."""
    s = trim_left_space(s)
    j = len(s)
    while j > 0 and s[j - 1] in GO_SPACES:
        j -= 1
    return s[:j]


def split_whitespace(s: str, limit: int = 0) -> list[str]:
    """``reWhitespace.Split(s, n)``: ``limit`` 0 splits everywhere, else at most ``limit`` parts."""
    return RE_WHITESPACE.split(s, maxsplit=max(limit - 1, 0))


_SPACES, _WORD, _QUOTE = 0, 1, 2


def parse_words(rest: str, escape: str) -> list[str]:
    """Split ENV/LABEL/ARG arguments into words; quotes and escapes stay in the words.

    An unquoted escape character keeps the character after it (even a quote or a space);
    inside double quotes the same; inside single quotes it is literal. An escape at the
    very end of the text is dropped.
    """
    words: list[str] = []
    phase = _SPACES
    quote = ""
    blank_ok = False
    buf: list[str] = []
    pos, n = 0, len(rest)
    while pos <= n:
        ch = rest[pos] if pos < n else ""
        if phase == _SPACES:
            if pos == n:
                break
            if ch in GO_SPACES:
                pos += 1
                continue
            phase = _WORD
        if pos == n:  # in a word or a quote at the end of the text
            if blank_ok or buf:
                words.append("".join(buf))
            break
        if phase == _WORD:
            if ch in GO_SPACES:
                phase = _SPACES
                if blank_ok or buf:
                    words.append("".join(buf))
                buf = []
                blank_ok = False
                pos += 1
                continue
            if ch in "'\"":
                quote, blank_ok, phase = ch, True, _QUOTE
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue
                buf.append(ch)
                pos += 1
                ch = rest[pos]
            buf.append(ch)
            pos += 1
            continue
        # phase == _QUOTE
        if ch == quote:
            phase = _WORD
        if ch == escape and quote != "'":
            if pos + 1 == n:
                phase = _WORD
                pos += 1
                continue
            buf.append(ch)
            pos += 1
            ch = rest[pos]
        buf.append(ch)
        pos += 1
    return words


def extract_flags(line: str, escape: str) -> tuple[str, list[str]]:
    """Take the leading ``--name=value`` words off an instruction's arguments.

    Returns (the rest of the line, the flags). Quotes in a flag are removed and an escape
    keeps the next character. A lone ``--`` ends the flags; a word not starting with ``--``
    does too.
    """
    words: list[str] = []
    phase = _SPACES
    quote = ""
    blank_ok = False
    buf: list[str] = []
    pos, n = 0, len(line)
    while pos <= n:
        ch = line[pos] if pos < n else ""
        if phase == _SPACES:
            if pos == n:
                break
            if ch in GO_SPACES:
                pos += 1
                continue
            if ch != "-" or pos + 1 == n or line[pos + 1] != "-":
                return line[pos:], words
            phase = _WORD
        if pos == n:
            word = "".join(buf)
            if word != "--" and (blank_ok or word):
                words.append(word)
            break
        if phase == _WORD:
            if ch in GO_SPACES:
                word = "".join(buf)
                phase = _SPACES
                if word == "--":
                    return line[pos:], words
                if blank_ok or word:
                    words.append(word)
                buf = []
                blank_ok = False
                pos += 1
                continue
            if ch in "'\"":
                quote, blank_ok, phase = ch, True, _QUOTE
                pos += 1
                continue
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            buf.append(ch)
            pos += 1
            continue
        # phase == _QUOTE
        if ch == quote:
            phase = _WORD
            pos += 1
            continue
        if ch == escape:
            if pos + 1 == n:
                phase = _WORD
                pos += 1
                continue
            pos += 1
            ch = line[pos]
        buf.append(ch)
        pos += 1
    return "", words


def split_command(line: str, escape: str) -> tuple[str, list[str], str]:
    """Split an instruction line into (command word as written, flags, arguments)."""
    parts = split_whitespace(trim_space(line), 2)
    flags: list[str] = []
    args = ""
    if len(parts) == 2:
        args, flags = extract_flags(parts[1], escape)
    return parts[0], flags, trim_space(args)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v", '"': '\\"', "\\": "\\\\"}


def go_quote(s: str) -> str:
    """Go's ``strconv.Quote``: double-quoted, printable characters kept, the rest escaped.

    Characters U+DC80..U+DCFF (bytes that were not UTF-8, decoded with ``surrogateescape``)
    print as ``\\xNN``, as Go prints the invalid bytes themselves.
    """
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable() and not 0xD800 <= code <= 0xDFFF:
            out.append(ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)
