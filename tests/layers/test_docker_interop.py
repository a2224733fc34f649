"""Docker's own layer code applies cloche's layers: whiteouts, opaque dirs, links, xattrs.

The test writes a busybox base layer with ``write_tree`` and a second layer with
``write_overlay_diff`` from a real overlay mount, wraps them in a minimal docker-archive made
here (manifest.json, config, layer tars), ``docker load``s it, and compares ``docker export``
of a container with what cloche's own ``flatten`` gives. Docker (overlay2) unpacks with its own
tar reader and whiteout handling, so this checks the layer format against the reference.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

from cloche.layers import Compression, apply_layer, flatten, write_overlay_diff, write_tree
from tests.fixtures.services import require_tool
from tests.layers.helpers import snapshot
from tests.layers.test_diff import overlay

DOCKER_MADE = {".dockerenv", "dev", "proc", "sys", "etc/hosts", "etc/hostname",
               "etc/resolv.conf", "etc/mtab"}


def docker_archive(layers: list[Path], diff_ids: list[str], tag: str, dest: Path) -> Path:
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": []}
    config_bytes = json.dumps(config).encode()
    manifest = [{"Config": "config.json", "RepoTags": [tag],
                 "Layers": [f"layer{i}.tar" for i in range(len(layers))]}]
    with tarfile.open(dest, "w") as tf:
        for name, data in (("config.json", config_bytes),
                           ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for i, layer in enumerate(layers):
            tf.add(layer, f"layer{i}.tar")
    return dest


def test_docker_applies_cloche_layers_like_flatten(tmp_path: Path, docker: str,
                                                   busybox_rootfs: Path) -> None:
    lower = tmp_path / "lower"
    shutil.copytree(busybox_rootfs, lower, symlinks=True)
    (lower / "data" / "old").mkdir(parents=True)
    (lower / "data" / "old" / "a").write_text("a")
    (lower / "data" / "gone").write_text("gone")
    (lower / "data" / "kept").write_text("kept")
    with overlay(tmp_path) as (_, upper, merged):
        (merged / "data" / "gone").unlink()
        shutil.rmtree(merged / "data" / "old")
        (merged / "data" / "old").mkdir()
        (merged / "data" / "old" / "b").write_text("b")
        (merged / "data" / "kept").write_text("changed")
        os.link(merged / "data" / "kept", merged / "data" / "kept-link")
        os.symlink("kept", merged / "data" / "sym")
        # docker export keeps only security.capability of all xattrs
        subprocess.run([require_tool("setcap", "apt-get install libcap2-bin"),
                        "cap_net_raw+ep", str(merged / "data" / "kept")], check=True)
        os.chown(merged / "home" / "app", 1000, 50)
        os.chmod(merged / "tmp", 0o1777)
    blobs, diff_ids = [], []
    for i, (writer, source) in enumerate(((write_tree, lower), (write_overlay_diff, upper))):
        blob = tmp_path / f"layer{i}.tar"
        with open(blob, "wb") as f:
            diff_ids.append(str(writer(source, f, Compression.NONE).diff_id))
        blobs.append(blob)

    ours = tmp_path / "ours"
    flatten([open(b, "rb") for b in blobs], ours)

    tag = f"cloche-layers-test:{uuid.uuid4().hex[:12]}"
    archive = docker_archive(blobs, diff_ids, tag, tmp_path / "image.tar")
    subprocess.run([docker, "load", "-i", str(archive)], check=True, capture_output=True)
    container = ""
    try:
        container = subprocess.run([docker, "create", tag], check=True, capture_output=True,
                                   text=True).stdout.strip()
        exported = tmp_path / "export.tar"
        subprocess.run([docker, "export", "-o", str(exported), container], check=True)
        theirs = tmp_path / "theirs"
        with open(exported, "rb") as f:
            apply_layer(f, theirs)
    finally:
        if container:
            subprocess.run([docker, "rm", "-f", container], capture_output=True)
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)

    def comparable(root: Path) -> dict:
        snap = snapshot(root)
        snap["etc"] = snap["etc"][:6] + (None,) + snap["etc"][7:]  # docker's init layer touches it
        return {path: v for path, v in snap.items()
                if not any(path == d or path.startswith(d + "/") for d in DOCKER_MADE)}

    mine, docker_view = comparable(ours), comparable(theirs)
    assert dict(docker_view["data/kept"][5]).get("security.capability")
    assert "data/gone" not in docker_view and sorted(os.listdir(theirs / "data" / "old")) == ["b"]
    assert mine == docker_view
