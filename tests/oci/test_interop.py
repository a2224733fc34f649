"""Interop with real clients: skopeo, umoci and Docker read what cloche writes, and cloche
reads what skopeo and ``docker save`` write. The image is a busybox rootfs made into a layer
by cloche.layers."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from cloche.layers import Compression, write_tree
from cloche.oci.archive import write_oci_archive
from cloche.oci.config import History, ImageConfig
from cloche.oci.docker_archive import DockerArchive, read_docker_archive, write_docker_archive
from cloche.oci.image import DirBlobSource, Image, Layer
from cloche.oci.layout import read_layout, write_layout
from cloche.oci.mutate import append_layers, canonicalise, empty_image, set_config
from cloche.oci.platform import Platform
from tests.fixtures.services import require_tool


def run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{args} failed: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def busybox_image(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Image:
    """A one-layer busybox image whose layer blob lives in a blobs directory."""
    blobs = tmp_path_factory.mktemp("blobs")
    spool = blobs / "layer.tmp"
    with open(spool, "wb") as sink:
        blob = write_tree(busybox_rootfs, sink, Compression.GZIP, source_date_epoch=0)
    target = blobs / blob.digest.algorithm / blob.digest.hex
    target.parent.mkdir()
    spool.rename(target)
    layer = Layer(blob.digest, blob.diff_id, blob.size, blob.media_type, DirBlobSource(blobs))
    base = empty_image(Platform.host())
    image = set_config(base, ImageConfig(
        architecture=base.config.architecture, os="linux",
        env=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
        cmd=("/bin/sh",), labels={"org.example.made-by": "cloche tests"}))
    image = append_layers(image, [layer], History(created_by="ADD rootfs / # cloche test"))
    return canonicalise(image, 0)


def test_skopeo_reads_and_copies_the_layout(busybox_image: Image, tmp_path: Path) -> None:
    skopeo = require_tool("skopeo", "apt-get install skopeo")
    write_layout(tmp_path / "lay", busybox_image, "v1")
    info = json.loads(run(skopeo, "inspect", f"oci:{tmp_path / 'lay'}:v1"))
    assert info["Digest"] == str(busybox_image.digest)
    assert info["Architecture"] == busybox_image.config.architecture
    assert info["Labels"] == {"org.example.made-by": "cloche tests"}
    assert info["Layers"] == [str(busybox_image.layers[0].digest)]
    raw = run(skopeo, "inspect", "--raw", f"oci:{tmp_path / 'lay'}:v1").encode()
    assert raw == busybox_image.manifest_bytes
    run(skopeo, "copy", f"oci:{tmp_path / 'lay'}:v1", f"oci:{tmp_path / 'copy'}:again")
    copied = read_layout(tmp_path / "copy", "again")
    assert copied.config == busybox_image.config
    assert [x.diff_id for x in copied.layers] == [x.diff_id for x in busybox_image.layers]
    assert copied.layers[0].open_uncompressed().read() == \
        busybox_image.layers[0].open_uncompressed().read()


def test_skopeo_reads_the_oci_archive(busybox_image: Image, tmp_path: Path) -> None:
    skopeo = require_tool("skopeo", "apt-get install skopeo")
    write_oci_archive(tmp_path / "a.tar", busybox_image, "v1")
    info = json.loads(run(skopeo, "inspect", f"oci-archive:{tmp_path / 'a.tar'}:v1"))
    assert info["Digest"] == str(busybox_image.digest)


def test_umoci_unpacks_the_layout(busybox_image: Image, busybox_rootfs: Path,
                                  tmp_path: Path) -> None:
    umoci = require_tool("umoci", "apt-get install umoci")
    write_layout(tmp_path / "lay", busybox_image, "v1")
    run(umoci, "unpack", "--image", f"{tmp_path / 'lay'}:v1", str(tmp_path / "bundle"))
    rootfs = tmp_path / "bundle" / "rootfs"
    assert (rootfs / "bin" / "busybox").read_bytes() == \
        (busybox_rootfs / "bin" / "busybox").read_bytes()
    assert (rootfs / "bin" / "sh").is_symlink()
    assert (rootfs / "etc" / "passwd").read_text().startswith("root:x:0:0:")
    spec = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert spec["process"]["args"] == ["/bin/sh"]


def test_skopeo_reads_the_docker_archive(busybox_image: Image, tmp_path: Path) -> None:
    skopeo = require_tool("skopeo", "apt-get install skopeo")
    write_docker_archive(tmp_path / "d.tar", busybox_image, ["cloche-test/busybox:v1"])
    info = json.loads(run(skopeo, "inspect", f"docker-archive:{tmp_path / 'd.tar'}"))
    assert info["Layers"] == [str(busybox_image.layers[0].diff_id)]  # stored uncompressed
    assert info["Architecture"] == busybox_image.config.architecture
    run(skopeo, "copy", f"docker-archive:{tmp_path / 'd.tar'}", f"oci:{tmp_path / 'lay'}:x")
    copied = read_layout(tmp_path / "lay", "x")
    assert copied.config.diff_ids == busybox_image.config.diff_ids
    assert copied.config.cmd == ("/bin/sh",)


def test_reads_the_docker_archive_skopeo_writes(busybox_image: Image, tmp_path: Path) -> None:
    skopeo = require_tool("skopeo", "apt-get install skopeo")
    write_layout(tmp_path / "lay", busybox_image, "v1")
    run(skopeo, "copy", f"oci:{tmp_path / 'lay'}:v1",
        f"docker-archive:{tmp_path / 'd.tar'}:cloche-test/from-skopeo:v2")
    archive = DockerArchive(tmp_path / "d.tar")
    assert archive.tags() == ("docker.io/cloche-test/from-skopeo:v2",)
    image = archive.image("cloche-test/from-skopeo:v2")
    assert image.config.diff_ids == busybox_image.config.diff_ids
    assert image.config.env == busybox_image.config.env
    assert image.layers[0].open_uncompressed().read() == \
        busybox_image.layers[0].open_uncompressed().read()


def test_docker_loads_runs_and_saves(busybox_image: Image, docker: str, tmp_path: Path) -> None:
    tag = f"cloche-test/busybox:{uuid.uuid4().hex[:12]}"
    write_docker_archive(tmp_path / "d.tar", busybox_image, [tag])
    try:
        out = run(docker, "load", "-i", str(tmp_path / "d.tar"))
        assert tag in out
        assert run(docker, "run", "--rm", tag, "/bin/busybox", "echo", "hello") == "hello\n"
        image_id = run(docker, "image", "inspect", "--format", "{{.Id}}", tag).strip()
        assert image_id == str(busybox_image.config_digest)
        # docker save (20.10: legacy <id>/layer.tar folders) read back by cloche
        run(docker, "save", "-o", str(tmp_path / "saved.tar"), tag)
        saved = read_docker_archive(tmp_path / "saved.tar", tag)
        assert saved.config.diff_ids == busybox_image.config.diff_ids
        assert saved.config.cmd == ("/bin/sh",)
        assert saved.layers[0].open_uncompressed().read() == \
            busybox_image.layers[0].open_uncompressed().read()
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True, timeout=120)
