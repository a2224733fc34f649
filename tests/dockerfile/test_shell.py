"""Word expansion beyond BuildKit's tables: pattern modifiers, escape char, heredocs, errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


SHELLY = st.lists(st.sampled_from(list("ab $:{}-+?#%/*'\"\\`\t\n") + ["é", "${a}", "${a:-"]),
                  max_size=30).map("".join)


@settings(max_examples=400, deadline=None)
@given(SHELLY, st.sampled_from(["\\", "`"]))
def test_any_text_expands_or_raises_a_shell_error(text: str, escape: str) -> None:
    for function in (expand_word, expand_words, expand_heredoc):
        try:
            function(text, ENV, escape)
        except ShellExpansionError:
            pass


@given(st.text(alphabet=st.characters(blacklist_characters="$'\"\\\x1c\x1d\x1e\x1f"),
               max_size=40))
def test_plain_text_is_unchanged(text: str) -> None:
    assert expand_word(text, ENV) == text
    assert expand_words(text, ENV) == text.split()


def test_words_split_at_go_white_space_only() -> None:
    assert expand_words("a\x1cb c\u00a0d", {}) == ["a\x1cb", "c", "d"]
