"""Word expansion beyond BuildKit's tables: pattern modifiers, escape char, heredocs, errors."""

from __future__ import annotations

import pytest

from cloche.dockerfile.shell import ShellExpansionError, expand_heredoc, expand_word, expand_words
from cloche.errors import DockerfileError

ENV = {"path": "/usr/local/bin/tool.tar.gz", "plat": "linux/arm64/v8", "empty": "", "a": "1"}


@pytest.mark.parametrize(("word", "expected"), [
    ("${path#*/}", "usr/local/bin/tool.tar.gz"),
    ("${path##*/}", "tool.tar.gz"),
    ("${path%.*}", "/usr/local/bin/tool.tar"),
    ("${path%%.*}", "/usr/local/bin/tool"),
    ("${plat%/*}", "linux/arm64"),
    ("${plat#linux/}", "arm64/v8"),
    ("${plat/\\//-}", "linux-arm64/v8"),
    ("${plat//\\//-}", "linux-arm64-v8"),
    ("${plat/arm64}", "linux//v8"),
    ("${path#nomatch}", "/usr/local/bin/tool.tar.gz"),
    ("${missing#x}", ""),
    ("${a-x}${empty-x}${unset-x}", "1x"),
    ("${a:+set}${empty:+set}${empty+set}", "setset"),
])
def test_pattern_and_default_modifiers(word: str, expected: str) -> None:
    assert expand_word(word, ENV) == expected


@pytest.mark.parametrize("word", ["${a:#x}", "${a:%x}", "${a", "${}", "${unset:?}", "'open",
                                  "${empty:?must be set}", "${a:=b}"])
def test_errors_are_dockerfile_errors(word: str) -> None:
    with pytest.raises(DockerfileError) as info:
        expand_word(word, ENV)
    assert isinstance(info.value, ShellExpansionError)
    assert isinstance(info.value, ValueError)


def test_question_mark_message_names_the_variable() -> None:
    with pytest.raises(ShellExpansionError, match="empty: must be set"):
        expand_word("${empty:?must be set}", ENV)
    with pytest.raises(ShellExpansionError, match="nope: is not allowed to be unset"):
        expand_word("${nope?}", ENV)


def test_backtick_escape_character() -> None:
    # with `# escape=``, a backslash is an ordinary character (Windows paths)
    assert expand_word(r"C:\dir`$a", ENV, escape="`") == r"C:\dir$a"
    assert expand_word(r"C:\dir\$a", ENV, escape="`") == "C:\\dir\\1"


def test_words_split_only_unquoted_variable_values() -> None:
    env = {"v": "a b"}
    assert expand_words("x $v 'y z'", env) == ["x", "a", "b", "y z"]
    assert expand_words('"$v"', env) == ["a b"]


def test_heredoc_keeps_quotes_and_expands_dollars() -> None:
    assert expand_heredoc("echo '$a' \"${a}\"\n", ENV) == "echo '1' \"1\"\n"
    assert expand_heredoc("cost \\$5\n", ENV) == "cost $5\n"
