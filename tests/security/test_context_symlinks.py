"""Issue 9, item 9: a Dockerfile or .dockerignore in the context that is a symlink to a host
file must not be read: before the fix its first line came back in the parse error.

BuildKit resolves both inside their directory (fsutil's FollowPaths: an absolute target
restarts at the context root, '..' stops there), so a link that stays inside still works.
Every test plants a host marker file and checks that its text appears in no output.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from tests.engine.conftest import Builder


@pytest.fixture
def marker(tmp_path: Path) -> tuple[Path, str]:
    """A host file outside every context whose first line reads like a Dockerfile line and
    like a bad .dockerignore pattern, so any parser that reads it prints it."""
    secret = f"hostsecret{uuid.uuid4().hex[:12]}"
    path = tmp_path / "host" / "marker"
    path.parent.mkdir()
    path.write_text(f"[{secret} x\n")
    return path, secret


def _clean(result: subprocess.CompletedProcess, secret: str) -> None:
    parts = [result.stdout or "", result.stderr or ""]
    out = "".join(p.decode(errors="replace") if isinstance(p, bytes) else p for p in parts)
    assert secret.lower() not in out.lower(), out


def test_dockerfile_symlink_to_host_file(builder: Builder, marker: tuple[Path, str]) -> None:
    path, secret = marker
    ctx = builder.context(None)
    os.symlink(path, ctx / "Dockerfile")
    result = builder.cli("build", str(ctx), check=False)
    _clean(result, secret)
    assert result.returncode != 0
    assert "Dockerfile" in result.stderr


def test_dockerfile_relative_symlink_climbing_out(builder: Builder,
                                                  marker: tuple[Path, str]) -> None:
    path, secret = marker
    ctx = builder.context(None)
    os.symlink(os.path.relpath(path, ctx), ctx / "Dockerfile")
    assert (ctx / "Dockerfile").read_text().startswith("[")  # the kernel would follow it out
    result = builder.cli("build", "-f", str(ctx / "Dockerfile"), str(ctx), check=False)
    _clean(result, secret)
    assert result.returncode != 0


def test_dockerignore_symlinks_to_host_file(builder: Builder, marker: tuple[Path, str]) -> None:
    """Both ``.dockerignore`` and ``<Dockerfile>.dockerignore``: a link out counts as no file."""
    path, secret = marker
    ctx = builder.context("FROM busybox-test:1\nCOPY . /ctx/\n", {"a.txt": "a"})
    os.symlink(path, ctx / ".dockerignore")
    result = builder.cli("build", str(ctx), check=False)
    _clean(result, secret)
    assert result.returncode == 0, result.stderr
    os.unlink(ctx / ".dockerignore")
    os.symlink(path, ctx / "Dockerfile.dockerignore")
    result = builder.cli("build", "-f", str(ctx / "Dockerfile"), str(ctx), check=False)
    _clean(result, secret)
    assert result.returncode == 0, result.stderr


def _tar(members: dict[str, str | bytes], links: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content in members.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def test_tar_context_dockerfile_symlink(builder: Builder, marker: tuple[Path, str]) -> None:
    path, secret = marker
    data = _tar({"a.txt": "a"}, {"Dockerfile": str(path)})
    result = builder.cli("build", "-", input=data, check=False)
    _clean(result, secret)
    assert result.returncode != 0


def test_tar_context_dockerignore_symlink(builder: Builder, marker: tuple[Path, str]) -> None:
    path, secret = marker
    data = _tar({"Dockerfile": "FROM busybox-test:1\nCOPY . /ctx/\n"},
                {".dockerignore": str(path)})
    result = builder.cli("build", "-", input=data, check=False)
    _clean(result, secret)
    assert result.returncode == 0, result.stderr


def test_links_inside_the_context_still_work(builder: Builder) -> None:
    """A relative link, and an absolute one read from the context root, as BuildKit does."""
    ctx = builder.context(None, {"docker/real.Dockerfile": "FROM busybox-test:1\nCOPY a /a\n",
                                 "a": "a", "docker/ignore": "nothing\n"})
    os.symlink("docker/real.Dockerfile", ctx / "Dockerfile")
    builder.cli("build", str(ctx))
    os.unlink(ctx / "Dockerfile")
    os.symlink("/docker/real.Dockerfile", ctx / "Dockerfile")
    os.symlink("/docker/ignore", ctx / ".dockerignore")
    builder.cli("build", str(ctx))


def test_dockerfile_fifo_is_refused_without_hanging(builder: Builder) -> None:
    ctx = builder.context(None)
    os.mkfifo(ctx / "Dockerfile")
    result = builder.cli("build", str(ctx), check=False, timeout=60)
    assert result.returncode != 0
    assert "not a regular file" in result.stderr, result.stderr
