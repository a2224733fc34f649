"""Differential test: ADD of URLs from a loopback server, by BuildKit and by cloche."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cloche.engine.add import add_into
from cloche.engine.context import context_from_directory
from cloche.engine.copy import CopyRequest
from tests.engine.test_copy_docker import snapshot_dir, snapshot_tar

OLD = 1_115_269_505  # 2005-05-05: served as Last-Modified


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    www = tmp_path / "www"
    (www / "f").mkdir(parents=True)
    (www / "f" / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    os.utime(www / "f" / "tool.sh", (OLD, OLD))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_add_url_matches_buildkit(tmp_path: Path, served: str, docker: str) -> None:
    url = f"{served}/f/tool.sh"
    steps = [CopyRequest((url,), "/dl/"), CopyRequest((url,), "/named"),
             CopyRequest((url,), "/own/", chown="3:4")]
    # Not compared: ADD --chmod of a URL. Debian's Docker 20.10 ignores it (0600 stays); current
    # BuildKit applies it (its testAddURLChmod), and so does cloche (tested in test_add.py).
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    lines = ["FROM scratch"]
    for step in steps:
        flags = "".join(f" --{k}={v}" for k, v in (("chown", step.chown), ("chmod", step.chmod)) if v)
        lines.append(f"ADD{flags} {url} {step.dest}")
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
    tag = f"cloche-add-diff-{uuid.uuid4().hex[:12]}"
    build = subprocess.run([docker, "build", "--no-cache", "-q", "-t", tag, str(ctx)],
                           capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, DOCKER_BUILDKIT="1"))
    assert build.returncode == 0, build.stderr
    try:
        container = subprocess.run([docker, "create", tag, "none"], capture_output=True,
                                   text=True, check=True).stdout.strip()
        try:
            export = subprocess.Popen([docker, "export", container], stdout=subprocess.PIPE)
            theirs = snapshot_tar(export.stdout)
            assert export.wait() == 0
        finally:
            subprocess.run([docker, "rm", container], capture_output=True)
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)
    root = tmp_path / "root"
    root.mkdir()
    tree = context_from_directory(ctx).tree
    for step in steps:
        add_into(CopyRequest(step.sources, step.dest, chown=step.chown, chmod=step.chmod,
                             instruction="ADD"), tree, root)
    ours = snapshot_dir(root)
    assert ours == theirs
    assert ours["named"][1] == "0o600" and ours["named"][6] == OLD  # 0600, Last-Modified
