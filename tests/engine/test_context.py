"""Build contexts: a directory in place, or a tar (any compression) or a Dockerfile on stdin."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from cloche.engine.context import ContextError, context_from_directory, context_from_stream, open_context
from cloche.engine.copy import CopyRequest, copy_into
from cloche.engine.sources import SourceNotFoundError
from cloche.errors import UnsafePathError


def tar_of(files: dict[str, bytes], *, uid: int = 1000) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), 0o644, uid, uid
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


FILES = {"Dockerfile": b"FROM scratch\nCOPY . /\n", "app/main.py": b"print(1)\n",
         "notes.md": b"n\n", ".dockerignore": b"*.md\n"}


def test_directory_context_reads_in_place(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    ctx = context_from_directory(tmp_path)
    assert ctx.root == tmp_path.resolve() and ctx.temporary is None
    assert ctx.tree.reset_owner and not ctx.ignore.patterns


@pytest.mark.parametrize("bad", ["missing", "file"])
def test_directory_context_errors(tmp_path: Path, bad: str) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ContextError) as info:
        context_from_directory(tmp_path / bad)
    assert str(tmp_path / bad) in str(info.value)


@pytest.mark.parametrize("compress", [lambda b: b, gzip.compress,
                                      lambda b: zstandard.ZstdCompressor().compress(b)],
                         ids=["plain", "gzip", "zstd"])
def test_tar_on_stdin(tmp_path: Path, compress: object) -> None:
    data = compress(tar_of(FILES))  # type: ignore[operator]
    with open_context("-", stdin=io.BytesIO(data)) as ctx:
        assert ctx.temporary is not None and ctx.temporary.is_dir()
        assert ctx.dockerfile is not None and ctx.dockerfile.read_bytes() == FILES["Dockerfile"]
        assert (ctx.root / "app" / "main.py").stat().st_uid == 0  # owners are not kept
        assert ctx.tree.excluded("notes.md") and not ctx.tree.excluded("app/main.py")
        root = tmp_path / "rootfs"
        root.mkdir()
        copy_into(CopyRequest((".",), "/"), ctx.tree, root)
        assert sorted(os.listdir(root)) == [".dockerignore", "Dockerfile", "app"]
        temp = ctx.temporary
    assert not temp.exists()  # cleaned up


def test_dockerfile_on_stdin_gives_an_empty_context() -> None:
    text = b"FROM scratch\nLABEL a=b\n"
    ctx = context_from_stream(io.BytesIO(text))
    try:
        assert ctx.dockerfile is not None and ctx.dockerfile.read_bytes() == text
        assert os.listdir(ctx.root) == []
        with pytest.raises(SourceNotFoundError):
            copy_into(CopyRequest(("Dockerfile",), "/"), ctx.tree, ctx.root.parent / "r")
    finally:
        ctx.cleanup()
    assert ctx.temporary is not None and not ctx.temporary.exists()


def test_malicious_tar_on_stdin_is_refused_and_cleaned(tmp_path: Path) -> None:
    before = set(os.listdir(tmp_path))
    with pytest.raises(UnsafePathError, match=r"\.\./\.\./escaped"):
        context_from_stream(io.BytesIO(tar_of({"../../escaped": b"x"})), workdir=tmp_path)
    assert set(os.listdir(tmp_path)) == before  # the temporary directory is gone too
    assert not (tmp_path.parent / "escaped").exists()


def test_dockerfile_specific_ignore_file(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("a\n")
    (tmp_path / "web.Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "web.Dockerfile.dockerignore").write_text("b\n")
    ctx = context_from_directory(tmp_path, tmp_path / "web.Dockerfile")
    assert ctx.tree.excluded("b") and not ctx.tree.excluded("a")
    assert context_from_directory(tmp_path).tree.excluded("a")


def test_dash_needs_a_stream() -> None:
    with pytest.raises(ContextError):
        with open_context("-"):
            pass
