"""`cloche history` shows what `docker history` shows for the same image, loaded into the
Docker engine: the same lines (image ID, age, instruction, layer size, comment), the same
sizes for layers with hard links and symbolic links, and the same -q, --no-trunc, --format."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from tests.engine.conftest import BASE, Builder

pytestmark = [pytest.mark.root, pytest.mark.docker]

DOCKERFILE = (f"FROM {BASE}\n"
              "RUN dd if=/dev/zero of=/big bs=1000 count=1500 2>/dev/null && ln /big /big2"
              " && ln -s /a/rather/long/target/path /sym\n"
              "ENV A=1\n"
              "RUN true\n"
              "WORKDIR /app\n"
              "COPY <<EOF /app/f\nhello\nEOF\n"
              "CMD [\"sh\", \"-c\", \"echo a rather long command line that Docker cuts at 45\"]\n")


def test_history_as_docker_shows_it(builder: Builder, docker: str, tmp_path: Path) -> None:
    tag = f"cloche-history-{uuid.uuid4().hex[:8]}:1"
    builder.build(DOCKERFILE, tags=(tag,))
    archive = tmp_path / "image.tar"
    builder.cli("save", "--format", "docker", "-o", str(archive), tag)
    subprocess.run([docker, "load", "-i", str(archive)], check=True, capture_output=True)
    try:
        # (--human=false: "1 second ago" would depend on when each command ran)
        for args in (("--human=false",), ("--no-trunc", "--human=false"), ("-q",),
                     ("--format", "{{.CreatedBy}}|{{.Size}}|{{.Comment}}")):
            theirs = subprocess.run([docker, "history", *args, tag], check=True,
                                    capture_output=True, text=True).stdout
            ours = builder.cli("history", *args, tag).stdout
            assert [line.rstrip() for line in ours.splitlines()] == \
                [line.rstrip() for line in theirs.splitlines()], args
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)
