"""Differential test: the files a .dockerignore lets through, per cloche and per BuildKit."""

from __future__ import annotations

import os
import subprocess
import tarfile
import uuid
from pathlib import Path

from cloche.engine.context import context_from_directory
from cloche.engine.copy import CopyRequest, copy_into

IGNORE = """\
# comment line
**/*.log
!keep/**/*.log
tmp
!tmp/important
/abs/
dir/*/x
[ab].md
 #notacomment
docs/**
!docs/api/*.md
deep/a/b
"""

FILES = ["a.md", "b.md", "c.md", "#notacomment", "app.log", "src/x.log", "src/main.go",
         "keep/one.log", "keep/sub/two.log", "tmp/junk", "tmp/important", "abs/file",
         "other/abs/file", "dir/p/x", "dir/p/y", "dir/x", "docs/guide.md", "docs/api/ref.md",
         "docs/api/img.png", "deep/a/b/c", "deep/a/bb", "Dockerfile"]


def make_context(ctx: Path) -> None:
    for rel in FILES:
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_text(rel)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY . /ctx/\nCOPY tmp /named/\n")
    (ctx / ".dockerignore").write_text(IGNORE)


def listing_from_docker(docker: str, ctx: Path) -> set[str]:
    tag = f"cloche-ignore-diff-{uuid.uuid4().hex[:12]}"
    env = dict(os.environ, DOCKER_BUILDKIT="1")
    build = subprocess.run([docker, "build", "--no-cache", "-q", "-t", tag, str(ctx)],
                           capture_output=True, text=True, env=env, timeout=300)
    assert build.returncode == 0, build.stderr
    try:
        container = subprocess.run([docker, "create", tag, "none"], capture_output=True,
                                   text=True, check=True).stdout.strip()
        try:
            export = subprocess.Popen([docker, "export", container], stdout=subprocess.PIPE)
            with tarfile.open(fileobj=export.stdout, mode="r|") as tf:
                names = {m.name.rstrip("/") for m in tf if m.name.startswith(("ctx/", "named/"))}
            assert export.wait() == 0
        finally:
            subprocess.run([docker, "rm", container], capture_output=True)
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)
    return names


def test_dockerignore_matches_buildkit(tmp_path: Path, docker: str) -> None:
    ctx = tmp_path / "ctx"
    make_context(ctx)
    theirs = listing_from_docker(docker, ctx)
    root = tmp_path / "root"
    root.mkdir()
    tree = context_from_directory(ctx).tree
    copy_into(CopyRequest((".",), "/ctx/"), tree, root)
    copy_into(CopyRequest(("tmp",), "/named/"), tree, root)  # excluded, but an exception inside
    ours = {str(p.relative_to(root)) for top in ("ctx", "named") for p in (root / top).rglob("*")}
    assert ours == theirs
    assert "ctx/keep/sub/two.log" in ours and "ctx/tmp/important" in ours  # the test has teeth
    assert "named/important" in ours
