"""The find-based listing gives the same cache-key hash as the Python walk, and sees changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cloche.engine.cache import StatCache
from cloche.engine.context import context_from_directory
from cloche.engine.fastwalk import list_tree
from cloche.engine.sources import content_hash
from cloche.store import Store


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    names = ["a", "a-b", "a.b", "a b", "é", "line\nbreak", "Z", "_x"]
    for name in names:
        (root / name).mkdir(parents=True)
        for child in ("1", "10", "2", "b-c", "b"):
            (root / name / child).write_text(f"{name}/{child}\n")
    (root / "a" / "deep" / "er").mkdir(parents=True)
    (root / "a" / "deep" / "er" / "f").write_text("deep\n")
    (root / "link").symlink_to("a/1")
    (root / "dangling").symlink_to("nowhere")
    os.mkfifo(root / "fifo")
    (root / "exec").write_text("#!/bin/sh\n")
    (root / "exec").chmod(0o4755)
    os.setxattr(root / "exec", "user.note", b"kept")
    return root


def _hash(root: Path, store_root: Path) -> str:
    cache = StatCache(Store.open(store_root), root)
    value = content_hash(context_from_directory(root).tree, (".",), cache=cache)
    cache.save()
    return value


def test_same_hash_as_the_python_walk(tree: Path, tmp_path: Path) -> None:
    listed = list_tree(tree)
    assert listed is not None and len(listed.entries) > 40
    plain = content_hash(context_from_directory(tree).tree, (".",))
    assert _hash(tree, tmp_path / "store") == plain
    assert _hash(tree, tmp_path / "store") == plain  # from the stat cache, no file read


def test_changes_are_seen_and_mtime_alone_is_not(tree: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = _hash(tree, store)
    target = tree / "a" / "2"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert _hash(tree, store) == first  # mtime only: same key (BuildKit's rule)
    target.write_text("a/3\n")  # same size, new content
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime back
    second = _hash(tree, store)
    assert second != first
    (tree / "a" / "1").chmod(0o600)
    assert _hash(tree, store) not in (first, second)
    os.setxattr(tree / "exec", "user.note", b"changed")
    assert _hash(tree, store) == content_hash(context_from_directory(tree).tree, (".",))
