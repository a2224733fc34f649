"""The COPY/ADD content hash for the build cache: what changes it and what does not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cloche.engine.chmod import ChmodError, parse_chmod
from cloche.engine.context import context_from_directory
from cloche.engine.sources import SourceTree, content_hash


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "src" / "pkg").mkdir(parents=True)
    (ctx / "src" / "main.go").write_text("package main\n")
    (ctx / "src" / "pkg" / "lib.go").write_text("package pkg\n")
    (ctx / "src" / "link").symlink_to("main.go")
    (ctx / "README.md").write_text("readme\n")
    (ctx / "unrelated.txt").write_text("u\n")
    return ctx


def h(ctx: Path, *specs: str, **kw: object) -> str:
    return content_hash(context_from_directory(ctx).tree, specs, **kw)  # type: ignore[arg-type]


def test_stable_and_blind_to_mtime(ctx: Path) -> None:
    first = h(ctx, "src")
    assert first.startswith("sha256:") and len(first) == 71
    os.utime(ctx / "src" / "main.go", (1, 1))
    os.utime(ctx / "src", (2, 2))
    assert h(ctx, "src") == first


def test_only_matched_sources_count(ctx: Path) -> None:
    first = h(ctx, "src")
    (ctx / "unrelated.txt").write_text("changed\n")
    assert h(ctx, "src") == first
    assert h(ctx, "*.md") != h(ctx, "*.txt")


@pytest.mark.parametrize("change", ["content", "mode", "link", "new file", "rename", "owner"])
def test_changes_that_matter(ctx: Path, change: str) -> None:
    first = h(ctx, "src")
    if change == "content":
        (ctx / "src" / "main.go").write_text("package main // edited\n")
    elif change == "mode":
        os.chmod(ctx / "src" / "pkg" / "lib.go", 0o600)
    elif change == "link":
        (ctx / "src" / "link").unlink()
        (ctx / "src" / "link").symlink_to("pkg/lib.go")
    elif change == "new file":
        (ctx / "src" / "pkg" / "new.go").write_text("")
    elif change == "rename":
        (ctx / "src" / "pkg" / "lib.go").rename(ctx / "src" / "pkg" / "lib2.go")
    elif change == "owner":
        os.chown(ctx / "src" / "main.go", 1000, 1000)
        stage = SourceTree.stage(ctx, "s")  # owners count from a stage, not from the context
        before = content_hash(stage, ["src"])
        os.chown(ctx / "src" / "main.go", 0, 0)
        assert content_hash(stage, ["src"]) != before
        assert h(ctx, "src") == first  # the context's owners are reset to 0:0 anyway
        return
    assert h(ctx, "src") != first


def test_ignored_and_excluded_paths_do_not_count(ctx: Path) -> None:
    first = h(ctx, ".")
    (ctx / ".dockerignore").write_text("*.md\n")
    ignored = h(ctx, ".")
    (ctx / "README.md").write_text("changed\n")
    assert h(ctx, ".") == ignored != first
    excluded = h(ctx, "src", excludes=("pkg",))
    (ctx / "src" / "pkg" / "lib.go").write_text("changed\n")
    assert h(ctx, "src", excludes=("pkg",)) == excluded


@pytest.mark.parametrize("text", ["", "8", "0o755", "u+q", "x+r", "77777", "u+x,"])
def test_bad_chmod_values(text: str) -> None:
    with pytest.raises(ChmodError) as info:
        parse_chmod(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(("text", "before", "is_dir", "after"), [
    ("755", 0o600, False, 0o755),
    ("0644", 0o777, True, 0o644),
    ("4755", 0o600, False, 0o4755),
    ("u+x", 0o644, False, 0o744),
    ("g-w,o-w", 0o666, False, 0o644),
    ("go=", 0o755, False, 0o700),
    ("+x", 0o644, False, 0o755),
    ("a+X", 0o644, False, 0o644),
    ("a+X", 0o644, True, 0o755),
    ("a+X", 0o744, False, 0o755),
    ("g=u", 0o740, False, 0o770),
    ("u+s,+t", 0o755, True, 0o5755),
    ("u=rw,go=r", 0o777, False, 0o644),
])
def test_chmod_table(text: str, before: int, is_dir: bool, after: int) -> None:
    assert parse_chmod(text).apply(before, is_dir=is_dir) == after


def test_file_digest_hook_is_used_for_every_file(ctx: Path) -> None:
    seen: list[str] = []

    def cached(host: Path, st: os.stat_result) -> str:
        seen.append(host.name)
        return f"{st.st_ino}-{st.st_size}"

    tree = context_from_directory(ctx).tree
    assert content_hash(tree, ["src"], file_digest=cached) != content_hash(tree, ["src"])
    assert sorted(seen) == ["lib.go", "main.go"]  # links and directories have no content
