"""Item 15 of issue 9: ``${}`` expansion is linear, and an expanded word is bounded.

A Dockerfile that doubles a variable line after line (``ENV A=${A}${A}``) used to take
quadratic time in the word splitter (16 lines ~25 s, 18 never finished), and the pattern
modifiers (``${A%%*b}``, ``${A//*b/x}``) tried every length with a regular expression each.
Each build runs as a child process with a deadline, so a regression fails instead of hanging.
"""

from __future__ import annotations

import time

import pytest

from cloche.dockerfile.shell import ShellExpansionError, expand_word, expand_words
from tests.engine.conftest import Builder

pytestmark = pytest.mark.timeout(300)

MAX_WORD = 1 << 20  # the documented bound of an expanded word


def _doubling(lines: int) -> str:
    return "FROM scratch\nENV A=x\n" + "ENV A=${A}${A}\n" * lines


def test_doubling_up_to_the_bound_builds_quickly(builder: Builder) -> None:
    # 20 doublings: a 1 MiB value (the bound itself, allowed); before the fix this needed ~80 s
    start = time.monotonic()
    ctx = builder.context(_doubling(20) + 'LABEL b="${A%%*b}" c="${A//*b/x}" d="${A#*a}"\n')
    result = builder.cli("build", "--progress=plain", "--iidfile", "iid", str(ctx), timeout=60)
    assert result.returncode == 0
    assert time.monotonic() - start < 60


def test_word_larger_than_the_bound_is_a_located_error(builder: Builder) -> None:
    ctx = builder.context(_doubling(21) + "LABEL x=1\n")
    result = builder.cli("build", "--progress=plain", str(ctx), check=False, timeout=60)
    assert result.returncode != 0
    # 2 header lines, then the 21st doubling is line 23
    assert "Dockerfile:23" in result.stderr, result.stderr
    assert "1 MiB" in result.stderr and "ENV" in result.stderr, result.stderr


def test_many_references_in_one_word_stop_at_the_bound() -> None:
    env = {"A": "a" * (MAX_WORD // 4)}
    with pytest.raises(ShellExpansionError, match="1 MiB"):
        expand_word("${A}" * 10_000, env)
    with pytest.raises(ShellExpansionError, match="1 MiB"):
        expand_word('"' + "${A}" * 10_000 + '"', env)
    with pytest.raises(ShellExpansionError, match="1 MiB"):
        expand_words("${A} " * 10_000, env)


@pytest.mark.parametrize("word", [
    "${A%%*b}", "${A%*b}", "${A##*b}", "${A#*b}", "${A//*b/x}", "${A/*b/x}",
    "${A//a*a*a*b/x}", "${A%%a*a*a*b}", "${A//?/x}", "${A//[ab]*c/x}",
])
def test_pattern_modifiers_on_a_large_value_are_fast(word: str) -> None:
    env = {"A": "a" * (MAX_WORD // 2)}
    start = time.monotonic()
    expand_word(word, env)
    assert time.monotonic() - start < 5, word


def test_doubling_in_process_is_linear() -> None:
    env = {"A": "x"}
    start = time.monotonic()
    for _ in range(20):
        env["A"] = expand_word("${A}${A}", env)
    assert len(env["A"]) == MAX_WORD
    assert time.monotonic() - start < 5
