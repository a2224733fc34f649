"""Item 16 of issue 9: a very deep folder tree (context, stage, layer) breaks nothing.

A 1,500-level tree in the context crashed COPY with "internal error: RecursionError", and a
RUN that made one broke every later ``cloche prune``. A 5,000-level tree (paths of 10,000
characters, beyond PATH_MAX) must work too: the walks are iterative and fd-relative.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloche import api
from cloche.api import BuildResult
from cloche.engine.options import BuildOptions
from cloche.fs.rmtree import rmtree
from cloche.layers.apply import apply_layer
from tests.engine.conftest import BASE, Builder, layer_members, rootfs

pytestmark = pytest.mark.timeout(600)

LEAF = b"at the bottom\n"


@pytest.fixture(autouse=True)
def _remove_deep_trees(tmp_path: Path) -> Iterator[None]:
    """pytest's own clean-up of old temporary folders uses shutil.rmtree, which these trees
    break: delete them here."""
    yield
    for child in list(tmp_path.iterdir()):
        rmtree(child, ignore_errors=True)


def make_deep(parent: Path, name: str, depth: int) -> None:
    """``parent/name/d/d/.../d/leaf`` with ``depth`` directories, made fd by fd."""
    fd = os.open(parent, os.O_DIRECTORY)
    try:
        for i in range(depth):
            child = name if i == 0 else "d"
            os.mkdir(child, dir_fd=fd)
            new = os.open(child, os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = new
        leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, LEAF)
        os.close(leaf)
    finally:
        os.close(fd)


def read_deep(parent: Path, name: str, depth: int) -> bytes:
    """The leaf at the bottom of a tree made by ``make_deep`` (fd by fd, never a long path)."""
    fd = os.open(parent, os.O_DIRECTORY)
    try:
        for i in range(depth):
            new = os.open(name if i == 0 else "d", os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = new
        leaf = os.open("leaf", os.O_RDONLY, dir_fd=fd)
        try:
            return os.read(leaf, 100)
        finally:
            os.close(leaf)
    finally:
        os.close(fd)


def deep_layer(depth: int, name: str = "deep") -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        path = name
        for i in range(depth):
            if i:
                path += "/d"
            info = tarfile.TarInfo(path)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo(path + "/leaf")
        info.size = len(LEAF)
        tar.addfile(info, io.BytesIO(LEAF))
    return raw.getvalue()


def _leaf_in_layers(result: BuildResult, prefix: str, depth: int) -> None:
    names = {m.name for m in layer_members(result.image.layers[-1])}
    assert prefix + "/d" * (depth - 1) + "/leaf" in names


def _build(builder: Builder, ctx: Path) -> BuildResult:
    return api.build(BuildOptions(context=str(ctx), root=builder.root))


def test_copy_of_a_deep_context_and_from_a_stage(builder: Builder, tmp_path: Path) -> None:
    depth = 1500
    ctx = builder.context(f"FROM {BASE} AS one\nCOPY deep /deep\n"
                          f"FROM {BASE}\nCOPY --from=one /deep /again\n")
    make_deep(ctx, "deep", depth)
    result = _build(builder, ctx)
    _leaf_in_layers(result, "again", depth)
    # the same build again: the context's cache key walks the deep tree once more
    again = _build(builder, ctx)
    assert again.image.digest == result.image.digest
    out = rootfs(result.image, tmp_path / "out")
    assert read_deep(out, "again", depth) == LEAF
    rmtree(out)
    assert not out.exists()


def test_context_paths_beyond_path_max_are_a_clean_error(builder: Builder) -> None:
    """5,000 levels: 10,000-byte paths, which no path-based call accepts; BuildKit fails the
    same way (lstat: file name too long). An error, never a crash, and prune still works."""
    ctx = builder.context(f"FROM {BASE}\nCOPY deep /deep\n")
    make_deep(ctx, "deep", 5000)
    result = builder.cli("build", "--progress=plain", str(ctx), check=False)
    assert result.returncode not in (0, 70), result.stderr[-2000:]
    assert "File name too long" in result.stderr
    assert "internal error" not in result.stderr and "Recursion" not in result.stderr
    builder.cli("prune", "--all", "-f")


def _deep_run(depth: int) -> str:
    return (f"i=0; while [ $i -lt {depth} ]; do mkdir d && cd d || exit 1; i=$((i+1)); done; "
            "echo bottom > leaf")


def test_run_making_a_deep_tree_then_prune(builder: Builder) -> None:
    result = builder.build(f"FROM {BASE}\nWORKDIR /w\nRUN {_deep_run(1500)}\n"
                           "RUN rm -rf /w/d\nRUN echo after > /after\n")
    names = {m.name for m in layer_members(result.image.layers[-3])}
    assert "w" + "/d" * 1500 + "/leaf" in names
    builder.cli("du")
    builder.cli("prune", "--all", "-f")
    snapshots = builder.root / "snapshots" / "steps"
    assert not snapshots.exists() or not any(snapshots.iterdir())


def test_run_making_a_tree_beyond_path_max_fails_cleanly(builder: Builder) -> None:
    ctx = builder.context(f"FROM {BASE}\nRUN {_deep_run(5000)}\n")
    result = builder.cli("build", "--progress=plain", str(ctx), check=False)
    assert result.returncode not in (0, 70), result.stderr[-2000:]
    assert "internal error" not in result.stderr and "Recursion" not in result.stderr
    assert "too long" in result.stderr, result.stderr[-2000:]
    builder.cli("du")
    builder.cli("prune", "--all", "-f")
    leftovers = [p for p in builder.root.rglob("*") if p.name == "d"]
    assert not leftovers


@pytest.mark.parametrize("depth", [1500, 5000])
def test_layer_with_a_deep_tree_applies_and_is_a_base(builder: Builder, tmp_path: Path,
                                                      depth: int) -> None:
    out = tmp_path / "applied"
    apply_layer(io.BytesIO(deep_layer(depth)), out)
    assert read_deep(out, "deep", depth) == LEAF
    # a later layer whose whiteout deletes the deep tree
    wh = io.BytesIO()
    with tarfile.open(fileobj=wh, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo(".wh.deep"))
    apply_layer(io.BytesIO(wh.getvalue()), out)
    assert not (out / "deep").exists()

    from cloche.ops.importer import import_rootfs

    tar_path = tmp_path / "deep.tar"
    tar_path.write_bytes(deep_layer(depth))
    import_rootfs(builder.store, tar_path, names=["deep-base:1"])
    built = builder.build(f"FROM {BASE} AS b\nRUN echo x > /x\n"
                          "FROM deep-base:1\nCOPY --from=b /x /x\n")
    assert len(built.image.layers) == 2
    ctx = builder.context(f"FROM {BASE}\nCOPY --from=deep-base:1 /deep /copied\n")
    copied = builder.cli("build", "--progress=plain", "--iidfile", "iid", str(ctx), check=False)
    if depth * 2 < 4096 - 200:  # paths fit in PATH_MAX: the copy works
        assert copied.returncode == 0, copied.stderr[-2000:]
        image = builder.store.image((builder.dir / "iid").read_text().strip())
        names = {m.name for m in layer_members(image.layers[-1])}
        assert "copied" + "/d" * (depth - 1) + "/leaf" in names
    else:  # as BuildKit: lstat fails with "file name too long"; an error, not a crash
        assert copied.returncode not in (0, 70) and "File name too long" in copied.stderr


def test_rmtree_is_iterative_and_fd_bounded(tmp_path: Path) -> None:
    make_deep(tmp_path, "deep", 5000)
    (tmp_path / "deep" / "file").write_text("x")
    os.symlink("/etc", tmp_path / "deep" / "link")  # a link is removed, never followed
    rmtree(tmp_path / "deep")
    assert not (tmp_path / "deep").exists()
    assert os.path.isdir("/etc/ssl") or os.path.isdir("/etc")
    rmtree(tmp_path / "missing")  # nothing there: nothing to do
