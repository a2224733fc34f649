"""`cloche images` as `docker images`: sizes as Docker counts them (the layers' files, not the
blobs), --digests, and --filter (reference, dangling, before, since, label) giving the same
images as Docker's filters for the same images loaded into the Docker engine."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

CLOCHE = [sys.executable, "-m", "cloche.cli.main"]

pytestmark = [pytest.mark.root, pytest.mark.docker]


def _cloche(store: Path, *args: str) -> str:
    return subprocess.run(CLOCHE + [args[0], "--root", str(store), *args[1:]], check=True,
                          capture_output=True, text=True).stdout


def test_images_filters_and_sizes_as_docker(busybox_rootfs: Path, tmp_path: Path,
                                            docker: str) -> None:
    store = tmp_path / "store"
    prefix = f"cloche-images-{uuid.uuid4().hex[:8]}"
    made = [(f"{prefix}/a:1", ["LABEL x=1"]), (f"{prefix}/b:1", ["LABEL x=2 y=3"]),
            (f"{prefix}/b:2", [])]
    for name, changes in made:
        _cloche(store, "import", str(busybox_rootfs), name,
                *[arg for change in changes for arg in ("-c", change)])
        time.sleep(1.1)  # created times a second apart: before/since tell them apart
    archive = tmp_path / "all.tar"
    _cloche(store, "save", "--format", "docker", "-o", str(archive), *[n for n, _ in made])
    subprocess.run([docker, "load", "-i", str(archive)], check=True, capture_output=True)
    try:
        template = "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}"
        for filters in ([f"reference={prefix}/*"], [f"reference={prefix}/b"],
                        [f"reference={prefix}/*:1"], [f"reference={prefix}/*", "label=x"],
                        [f"reference={prefix}/*", "label=x=2"],
                        [f"reference={prefix}/*", f"before={prefix}/b:1"],
                        [f"reference={prefix}/*", f"since={prefix}/a:1"],
                        [f"reference={prefix}/*", "dangling=false"],
                        [f"reference={prefix}/*", "dangling=true"]):
            args = [a for f in filters for a in ("--filter", f)]
            theirs = subprocess.run([docker, "images", *args, "--format", template],
                                    check=True, capture_output=True, text=True).stdout
            ours = _cloche(store, "images", *args, "--format", template)
            assert sorted(ours.splitlines()) == sorted(theirs.splitlines()), filters
        table = _cloche(store, "images", "--digests", f"{prefix}/a")
        assert "DIGEST" in table.splitlines()[0] and "sha256:" in table
        bad = subprocess.run(CLOCHE + ["images", "--root", str(store), "-f", "colour=red"],
                             capture_output=True, text=True)
        assert bad.returncode != 0 and "--filter 'colour=red'" in bad.stderr
    finally:
        subprocess.run([docker, "rmi", "-f", *[n for n, _ in made]], capture_output=True)
