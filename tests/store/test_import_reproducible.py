"""`cloche import` with SOURCE_DATE_EPOCH gives the same image for the same files."""

from __future__ import annotations

import os
from pathlib import Path

from cloche.ops.importer import import_rootfs
from cloche.store import Store


def test_source_date_epoch_makes_imports_reproducible(tmp_path: Path, monkeypatch) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hello").write_text("hi\n")
    os.utime(tree / "etc" / "hello", (1_600_000_000, 1_600_000_000))
    store = Store.open(tmp_path / "store")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first, image = import_rootfs(store, tree, names=["a:1"])
    second, _ = import_rootfs(store, tree, names=["b:1"])
    assert first.digest == second.digest
    assert image.config.created.startswith("2023-11-14T22:13:20")
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    third, _ = import_rootfs(store, tree, names=["c:1"])
    assert third.digest != first.digest
