""".dockerignore reading and matching, as BuildKit (moby/patternmatcher) does it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloche.engine.dockerignore import (
    DockerignoreError,
    PatternMatcher,
    find_ignore_file,
    load_matcher,
    parse_dockerignore,
)


def test_reading_rules() -> None:
    text = ("\ufeff# a comment\n"
            "  # not a comment: only column 1 starts one\n"
            "\n"
            "   \n"
            "/abs/path/\n"
            "./a//b/../c\n"
            "! keep.txt \n"
            "!/also/\n"
            "trailing/\n")
    assert parse_dockerignore(text) == [
        (2, "# not a comment: only column 1 starts one"),
        (5, "abs/path"),
        (6, "a/c"),
        (7, "!keep.txt"),
        (8, "!also"),
        (9, "trailing"),
    ]


def test_bom_only_on_first_line() -> None:
    assert parse_dockerignore("a\n\ufeffb\n") == [(1, "a"), (2, "\ufeffb")]


# (rules, path, excluded?)
TABLE = [
    (["foo"], "foo", True),
    (["foo"], "foo/bar", True),                 # contents of an excluded directory
    (["foo"], "foobar", False),
    (["foo"], "x/foo", False),                  # patterns are anchored at the root
    (["*.md"], "README.md", True),
    (["*.md"], "docs/README.md", False),        # * does not cross /
    (["*/*.md"], "docs/README.md", True),
    (["**/*.md"], "README.md", True),
    (["**/*.md"], "a/b/c/README.md", True),
    (["**/*.md"], "a/b/c/README.mdx", False),
    (["a/**/z"], "a/z", True),
    (["a/**/z"], "a/b/c/z", True),
    (["a/**/z"], "b/a/z", False),
    (["a/**"], "a/x/y", True),
    (["a/**"], "ab", False),
    (["**"], "anything/at/all", True),
    (["**/node_modules"], "node_modules", True),
    (["**/node_modules"], "x/node_modules/y", True),
    (["?.txt"], "a.txt", True),
    (["?.txt"], "ab.txt", False),
    (["[a-c].txt"], "b.txt", True),
    (["[^a-c].txt"], "b.txt", False),
    (["[^a-c].txt"], "d.txt", True),
    (["a\\*b"], "a*b", False),                  # escapes keep an exact rule literal (quirk)
    (["x\\?[y]"], "x?y", True),
    (["file.txt"], "fileXtxt", False),          # '.' is literal
    (["(a)+b"], "(a)+b", True),
    (["*", "!keep"], "keep", False),
    (["*", "!keep"], "other", True),
    (["*", "!keep", "keep"], "keep", True),     # the last matching line wins
    (["dir", "!dir/keep"], "dir/keep", False),
    (["dir", "!dir/keep"], "dir/other", True),
    (["dir", "!dir/keep"], "dir/keep/inner", False),  # the exception also matches via a parent
    (["dir/*", "!dir/keep*"], "dir/keep.txt", False),
    (["**/*.go", "!**/main.go"], "cmd/main.go", False),
    (["**/*.go", "!**/main.go"], "cmd/util.go", True),
    (["/abs/"], "abs/x", True),
    (["./rel/../other"], "other", True),
]


@pytest.mark.parametrize(("rules", "path", "excluded"), TABLE)
def test_matching_table(rules: list[str], path: str, excluded: bool) -> None:
    matcher = PatternMatcher.from_text("\n".join(rules))
    assert matcher.matches(path) is excluded


@pytest.mark.parametrize(("rules", "directory", "descend"), [
    (["dir", "!dir/keep"], "dir", True),
    (["dir", "!other/keep"], "dir", False),
    (["dir"], "dir", False),
    (["*", "!*/keep"], "anydir", True),
    (["dir", "!**/keep"], "dir", True),
    (["a", "!a/b/c"], "a/b", True),
    (["a", "!a/b/c"], "a/x", False),
    (["a", "!a"], "a", False),
])
def test_may_include_below(rules: list[str], directory: str, descend: bool) -> None:
    assert PatternMatcher.from_text("\n".join(rules)).may_include_below(directory) is descend


def test_bad_pattern_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("ok\n\n[unclosed\n")
    with pytest.raises(DockerignoreError) as info:
        load_matcher(tmp_path)
    assert info.value.line == 3
    assert ".dockerignore:3" in str(info.value) and "[unclosed" in str(info.value)


def test_lone_exclamation_is_an_error() -> None:
    with pytest.raises(DockerignoreError, match="illegal exclusion"):
        PatternMatcher.from_text("a\n!\n")


def test_dockerfile_specific_ignore_takes_precedence(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("generic\n")
    sub = tmp_path / "build"
    sub.mkdir()
    dockerfile = sub / "app.Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    assert find_ignore_file(tmp_path, dockerfile) == tmp_path / ".dockerignore"
    (sub / "app.Dockerfile.dockerignore").write_text("specific\n")
    matcher = load_matcher(tmp_path, dockerfile)
    assert matcher.matches("specific") and not matcher.matches("generic")


def test_no_ignore_file_excludes_nothing(tmp_path: Path) -> None:
    assert not load_matcher(tmp_path).matches("anything")
