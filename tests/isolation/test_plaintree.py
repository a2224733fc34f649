"""engine/plaintree.py: a stage's files as a plain tree, and a step's change as an overlay
upper directory found by comparing the tree with an index taken before the step."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

from cloche.compression import Compression
from cloche.engine import plaintree
from cloche.layers.diff import is_whiteout, write_overlay_diff


class _Buffer(io.BytesIO):
    pass


def _layer_names(upper: Path) -> list[str]:
    sink = _Buffer()
    write_overlay_diff(upper, sink, Compression.NONE)
    with tarfile.open(fileobj=io.BytesIO(sink.getvalue())) as tar:
        return sorted(m.name for m in tar.getmembers())


def _step(tree: Path, upper: Path, change) -> None:
    pins: list[int] = []
    before = plaintree.index(tree, pins)
    try:
        change()
    finally:
        upper.mkdir()
        plaintree.diff(tree, before, upper)
        for fd in pins:
            os.close(fd)


def test_diff_writes_overlay_format(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "etc").mkdir(parents=True)
    (base / "etc" / "keep").write_text("k")
    (base / "etc" / "gone").write_text("g")
    (base / "dir" / "sub").mkdir(parents=True)
    (base / "dir" / "sub" / "old").write_text("o")
    (base / "deep" / "a" / "b").mkdir(parents=True)
    (base / "deep" / "a" / "b" / "f").write_text("f")
    tree = tmp_path / "tree"
    plaintree.materialize([base], tree)
    upper = tmp_path / "upper"

    def change() -> None:
        (tree / "etc" / "gone").unlink()
        (tree / "deep" / "a" / "b" / "f").write_text("changed")
        for p in (tree / "dir" / "sub" / "old", ):
            p.unlink()
        (tree / "dir" / "sub").rmdir()
        (tree / "dir" / "sub").mkdir()  # the same inode number is likely: still opaque
        (tree / "dir" / "sub" / "new").write_text("n")
        os.chmod(tree / "etc" / "keep", 0o600)

    _step(tree, upper, change)
    names = _layer_names(upper)
    assert "etc/.wh.gone" in names
    assert "etc/keep" in names
    assert "dir/sub/.wh..wh..opq" in names and "dir/sub/new" in names
    assert "dir/sub/old" not in names
    assert {"deep", "deep/a", "deep/a/b", "deep/a/b/f"} <= set(names)  # parents copied up
    # the tree moved forward equals a fresh one of (upper, base)
    fresh = tmp_path / "fresh"
    plaintree.materialize([upper, base], fresh)
    assert sorted(str(p.relative_to(fresh)) for p in fresh.rglob("*")) == \
        sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))


def test_xattr_whiteout_is_read_as_a_whiteout(tmp_path: Path) -> None:
    """The kernel's other whiteout form (what a container's overlayfs allows): an empty file
    with user.overlay.whiteout is a deletion for the layer writer and for a tree."""
    upper = tmp_path / "upper"
    upper.mkdir()
    marker = upper / "gone"
    marker.touch(mode=0)
    os.setxattr(marker, "user.overlay.whiteout", b"y")
    st = os.lstat(marker)
    assert stat.S_ISREG(st.st_mode) and is_whiteout(str(marker), st)
    assert _layer_names(upper) == [".wh.gone"]
    base = tmp_path / "base"
    base.mkdir()
    (base / "gone").write_text("x")
    tree = tmp_path / "tree"
    plaintree.materialize([upper, base], tree)
    assert not (tree / "gone").exists()
