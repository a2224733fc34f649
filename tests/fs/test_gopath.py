"""Go's path rules (cloche.fs.gopath): filepath.Match against a table written from the Go spec's
rules, and path.Clean."""

from __future__ import annotations

import pytest

from cloche.fs.gopath import BadPatternError, go_clean, has_wildcards, match

BAD = "bad"

# (pattern, name, expected): expected is True/False or BAD for ErrBadPattern.
CASES = [
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", False),
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a?b", "a\u263ab", True),
    ("a[^a]b", "a\u263ab", True),
    ("a???b", "a\u263ab", False),
    ("a[^a][^a][^a]b", "a\u263ab", False),
    ("[a-\u03b6]*", "\u03b1", True),
    ("*[a-\u03b6]", "A", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "x", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("[\\-x]", "x", True),
    ("[\\-x]", "-", True),
    ("[\\-x]", "a", False),
    ("[]a]", "]", BAD),
    ("[-]", "-", BAD),
    ("[x-]", "x", BAD),
    ("[x-]", "-", BAD),
    ("[x-]", "z", BAD),
    ("[-x]", "x", BAD),
    ("[-x]", "-", BAD),
    ("[-x]", "a", BAD),
    ("\\", "a", BAD),
    ("[a-b-c]", "a", BAD),
    ("[", "a", BAD),
    ("[^", "a", BAD),
    ("[^bc", "a", BAD),
    ("a[", "a", BAD),
    ("a[", "ab", BAD),
    ("a[", "x", BAD),
    ("a/b[", "x", BAD),
    ("*x", "xxx", True),
    # beyond Go's own table: behaviours that follow from its rules
    ("", "", True),
    ("", "a", False),
    ("*", "", True),
    ("*", "a/b", False),
    ("*/*", "a/b", True),
    ("a[/]b", "a/b", True),          # a class may match the separator
    ("a[^x]b", "a/b", True),         # so may a negated one
    ("[z-a]", "m", False),           # an inverted range matches nothing, no error
    ("[\\\\]", "\\", True),
    ("\\[x]", "[x]", True),
    ("a]b", "a]b", True),
    ("**", "abc", True),
    ("**", "a/c", False),
    ("*.go", ".go", True),
    ("?", "", False),
    ("[^]", "a", BAD),
    ("[]", "a", BAD),
    ("x*[", "x", BAD),               # the whole pattern is checked, even after a mismatch
]


@pytest.mark.parametrize(("pattern", "name", "expected"), CASES)
def test_go_match_table(pattern: str, name: str, expected: object) -> None:
    if expected is BAD:
        with pytest.raises(BadPatternError) as info:
            match(pattern, name)
        assert repr(pattern) in str(info.value)
    else:
        assert match(pattern, name) is expected


@pytest.mark.parametrize(("text", "expected"), [
    ("a/b", False), ("*.txt", True), ("a?", True), ("[ab]", True), ("a\\*b", False),
    ("dir/sub*/x", True), ("", False),
])
def test_has_wildcards(text: str, expected: bool) -> None:
    assert has_wildcards(text) is expected


# ---- properties: an independent regular-expression oracle for the class-free subset


import re  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_names = st.text(alphabet="ab/.", max_size=8)
_patterns = st.text(alphabet="ab/.*?", max_size=8)


def _oracle(pattern: str, name: str) -> bool:
    regex = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.DOTALL) is not None


@settings(max_examples=400, deadline=None)
@given(_patterns, _names)
def test_matches_the_oracle(pattern: str, name: str) -> None:
    assert match(pattern, name) is _oracle(pattern, name)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=12))
def test_an_escaped_name_matches_itself(name: str) -> None:
    escaped = "".join("\\" + c for c in name)
    assert match(escaped, name)
    assert not has_wildcards(escaped)


# ---- go_clean: Go's path.Clean, where Python's normpath differs


@pytest.mark.parametrize("path,expected", [
    ("", "."), (".", "."), ("/", "/"), ("//a//b/", "/a/b"), ("///a", "/a"),
    ("a/../..", ".."), ("../a/./b/..", "../a"), ("/../a", "/a"), ("a/b/../../c/", "c"),
])
def test_go_clean(path: str, expected: str) -> None:
    assert go_clean(path) == expected
