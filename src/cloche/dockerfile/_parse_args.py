"""Per-instruction argument readers: the text after the flags -> BuildKit's argument list.

Each instruction has one of a few argument shapes (BuildKit's line parsers); the table
``READERS`` says which. A reader returns ``(args, is_exec_form)``. ONBUILD is not here: its
argument is a whole instruction, which the parser reads recursively.
"""

from __future__ import annotations

from collections.abc import Callable

from cloche.dockerfile._parse_errors import DockerfileSyntaxError
from cloche.dockerfile._parse_json import NotStringArray, parse_json_array
from cloche.dockerfile._parse_words import (
    GO_SPACES,
    go_quote,
    parse_words,
    split_whitespace,
    trim_left_space,
)

Args = tuple[tuple[str, ...], bool]
Reader = Callable[[str, str], Args]

NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only"


def _json(rest: str) -> tuple[str, ...] | None:
    """Exec-form words, or None when ``rest`` is not a JSON array (so: shell form)."""
    rest = trim_left_space(rest)
    if not rest.startswith("["):
        return None
    try:
        words = parse_json_array(rest)
    except NotStringArray:
        raise DockerfileSyntaxError(NOT_STRING_ARRAY, token="[") from None
    return None if words is None else tuple(words)


def maybe_json(rest: str, escape: str = "\\") -> Args:
    """RUN, CMD, ENTRYPOINT, SHELL: a JSON array, else the whole text as one string."""
    if rest == "":
        return (), False
    words = _json(rest)
    if words is not None:
        return words, True
    return (rest,), False


def maybe_json_to_list(rest: str, escape: str = "\\") -> Args:
    """ADD, COPY, VOLUME: a JSON array, else words split at whitespace."""
    words = _json(rest)
    if words is not None:
        return words, True
    return whitespace_delimited(rest)


def whitespace_delimited(rest: str, escape: str = "\\") -> Args:
    """FROM, EXPOSE: words split at spaces and tabs (no quote handling)."""
    if rest == "":
        return (), False
    return tuple(split_whitespace(rest)), False


def single_string(rest: str, escape: str = "\\") -> Args:
    """MAINTAINER, USER, WORKDIR, STOPSIGNAL: the text as one string."""
    return ((rest,) if rest else ()), False


def name_or_name_value(rest: str, escape: str) -> Args:
    """ARG: each word as written (``foo``, ``bar=baz``, ``abc="1 2"``)."""
    return tuple(parse_words(rest, escape)), False


def _name_value(rest: str, escape: str, key: str) -> Args:
    """ENV and LABEL: key/value/separator triples.

    ``KEY name value`` (old form, separator "") when the first word has no ``=``, else
    ``name=value ...`` (separator "=") where every word must contain ``=``.
    """
    words = parse_words(rest, escape)
    if not words:
        return (), False
    if "=" not in words[0]:
        parts = split_whitespace(rest, 2)
        if len(parts) < 2:
            raise DockerfileSyntaxError(f"{key} must have two arguments", token=parts[0])
        return (parts[0], parts[1], ""), False
    out: list[str] = []
    for word in words:
        if "=" not in word:
            raise DockerfileSyntaxError(
                f"Syntax error - can't find = in {go_quote(word)}. Must be of the form: name=value",
                token=word)
        name, value = word.split("=", 1)
        out += [name, value, "="]
    return tuple(out), False


def env(rest: str, escape: str) -> Args:
    return _name_value(rest, escape, "ENV")


def label(rest: str, escape: str) -> Args:
    return _name_value(rest, escape, "LABEL")


def healthcheck(rest: str, escape: str) -> Args:
    """HEALTHCHECK: the type word (CMD, NONE...) then the command as for CMD."""
    sep = 0
    while sep < len(rest) and rest[sep] not in GO_SPACES:
        sep += 1
    if sep == 0:
        return (), False
    start = sep
    while start < len(rest) and rest[start] in GO_SPACES:
        start += 1
    command, is_json = maybe_json(rest[start:])
    return (rest[:sep], *command), is_json


def ignore(rest: str, escape: str) -> Args:
    """An unknown instruction: BuildKit keeps one empty argument and drops the text."""
    return ("",), False


READERS: dict[str, Reader] = {
    "add": maybe_json_to_list,
    "arg": name_or_name_value,
    "cmd": maybe_json,
    "copy": maybe_json_to_list,
    "entrypoint": maybe_json,
    "env": env,
    "expose": whitespace_delimited,
    "from": whitespace_delimited,
    "healthcheck": healthcheck,
    "label": label,
    "maintainer": single_string,
    "run": maybe_json,
    "shell": maybe_json,
    "stopsignal": single_string,
    "user": single_string,
    "volume": maybe_json_to_list,
    "workdir": single_string,
}

# Every instruction the parser knows (ONBUILD is read by the parser itself).
KNOWN = frozenset(READERS) | {"onbuild"}
# Instructions whose shell form may carry heredocs.
HEREDOC_INSTRUCTIONS = frozenset({"add", "copy", "run"})
