"""OCI layouts, OCI archives and docker-archives written and read back by cloche itself,
including archives shaped the way older Docker wrote them and hostile ones."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from cloche.oci import mediatypes as mt
from cloche.oci.archive import OciArchive, read_oci_archive, write_oci_archive
from cloche.oci.digest import Digest, DigestMismatchError
from cloche.oci.docker_archive import DockerArchive, read_docker_archive, write_docker_archive
from cloche.oci.errors import ImageFormatError, RefNotFoundError
from cloche.oci.layout import Layout, read_layout, write_layout
from cloche.oci.platform import Platform
from tests.oci.helpers import small_image, tar_of


def test_layout_holds_several_named_images(tmp_path: Path) -> None:
    one = small_image({"a": b"1"})
    two = small_image({"a": b"1"}, {"b": b"2"})
    write_layout(tmp_path, one, "one")
    write_layout(tmp_path, two, "two")
    write_layout(tmp_path, two, "one")  # re-tagging replaces the entry
    assert json.loads((tmp_path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    layout = Layout.open(tmp_path)
    assert sorted(layout.names()) == ["one", "two"]
    back = read_layout(tmp_path, "two")
    assert back.digest == two.digest and back.config == two.config
    assert [x.open_uncompressed().read() for x in back.layers] == \
        [x.open_uncompressed().read() for x in two.layers]
    for layer in two.layers:
        assert (tmp_path / "blobs" / "sha256" / layer.digest.hex).is_file()
    with pytest.raises(RefNotFoundError) as info:
        layout.image("three")
    assert "one" in info.value.render()
    with pytest.raises(RefNotFoundError):
        layout.image()  # two images: a name is needed
    layout.remove("one")
    assert layout.image().digest == two.digest


def test_layout_multi_platform_index(tmp_path: Path) -> None:
    amd = small_image({"a": b"amd"}, platform="linux/amd64")
    arm = small_image({"a": b"arm"}, platform="linux/arm64")
    layout = Layout.create(tmp_path)
    layout.write_index([amd, arm], "multi")
    assert layout.image("multi", platform=Platform.parse("linux/aarch64")).digest == arm.digest
    assert layout.image("multi", platform=Platform.parse("linux/amd64")).digest == amd.digest


def test_layout_docker_manifest_list_and_ref_names(tmp_path: Path) -> None:
    amd = small_image({"a": b"amd"}, platform="linux/amd64")
    arm = small_image({"a": b"arm"}, platform="linux/arm/v6")
    layout = Layout.create(tmp_path)
    desc = layout.write_index([amd, arm], "list", docker=True)
    assert desc.media_type == mt.DOCKER_MANIFEST_LIST
    assert layout.image("list", platform=Platform.parse("linux/arm/v7")).digest == arm.digest
    for bad in ("has space", "-leading", "trailing/", "a//b", ""):
        with pytest.raises(ImageFormatError, match="invalid image name"):
            layout.write_image(amd, bad)
    for good in ("v1.0", "docker.io/library/busybox:1.36", "a--b", "x@y+z"):
        layout.write_image(amd, good)
    assert set(layout.names()) == {"list", "v1.0", "docker.io/library/busybox:1.36", "a--b",
                                   "x@y+z"}


def test_layout_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ImageFormatError, match="oci-layout"):
        Layout.open(tmp_path)
    image = small_image({"a": b"1"})
    write_layout(tmp_path, image, "x")
    layer_path = tmp_path / "blobs" / "sha256" / image.layers[0].digest.hex
    layer_path.write_bytes(b"corrupted" * 3)
    with pytest.raises((DigestMismatchError, ImageFormatError)):
        read_layout(tmp_path, "x").layers[0].open().read()
    # a blob planted as a symlink to a file outside is not followed
    secret = tmp_path.parent / "secret"
    secret.write_bytes(b"do not read")
    layer_path.unlink()
    layer_path.symlink_to(secret)
    with pytest.raises(OSError):
        read_layout(tmp_path, "x").layers[0].open()


def test_oci_archive_round_trip(tmp_path: Path) -> None:
    one = small_image({"a": b"1"})
    two = small_image({"a": b"1"}, {"b": b"2"}, compression="zstd")
    path = tmp_path / "images.tar"
    write_oci_archive(path, [(one, "one"), (two, "two")])
    archive = OciArchive(path)
    assert archive.names() == ("one", "two")
    back = archive.image("two")
    assert back.digest == two.digest
    assert back.layers[1].open_uncompressed().read() == tar_of({"b": b"2"})
    with tarfile.open(path) as tar:
        names = tar.getnames()
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
    assert names.count(f"blobs/sha256/{one.layers[0].digest.hex}") == 1  # shared blob once
    # the same input gives the same bytes
    again = tmp_path / "again.tar"
    write_oci_archive(again, [(one, "one"), (two, "two")])
    assert again.read_bytes() == path.read_bytes()
    with pytest.raises(ImageFormatError, match="not an OCI archive"):
        read_oci_archive(_write_tar(tmp_path / "other.tar", {"x": b"y"}))


def test_oci_archive_to_stream(tmp_path: Path) -> None:
    image = small_image({"a": b"1"})
    buf = io.BytesIO()
    write_oci_archive(buf, image, "latest")
    (tmp_path / "a.tar").write_bytes(buf.getvalue())
    assert read_oci_archive(tmp_path / "a.tar", "latest").digest == image.digest


def test_docker_archive_round_trip(tmp_path: Path) -> None:
    image = small_image({"a": b"1"}, {"b": b"2"})
    path = tmp_path / "d.tar"
    write_docker_archive(path, image, ["example.com:5000/team/app:v1", "app"])
    with tarfile.open(path) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        layer0 = tar.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    assert manifest[0]["RepoTags"] == ["example.com:5000/team/app:v1", "app:latest"]
    # BuildKit's docker exporter: the OCI layout of the same blobs, one entry per name
    assert [m["annotations"] for m in index["manifests"]] == [
        {"io.containerd.image.name": "example.com:5000/team/app:v1",
         "org.opencontainers.image.ref.name": "v1"},
        {"io.containerd.image.name": "docker.io/library/app:latest",
         "org.opencontainers.image.ref.name": "latest"}]
    assert manifest[0]["Layers"] == [f"blobs/sha256/{x.digest.hex}" for x in image.layers]
    with image.layers[0].open() as blob:
        assert layer0 == blob.read()  # the layer as stored
    assert read_oci_archive(path, "v1").digest == image.digest
    back = read_docker_archive(path, "app")
    assert back.config_bytes == image.config_bytes
    assert [x.digest for x in back.layers] == [x.digest for x in image.layers]
    docker = DockerArchive(path).image("app:latest", docker=True)
    assert docker.media_type == mt.DOCKER_MANIFEST
    assert docker.manifest.layers[0].media_type == mt.layer_type(
        image.layers[0].compression, docker=True)
    assert read_docker_archive(path, "docker.io/library/app").digest == back.digest
    assert read_docker_archive(path, "example.com:5000/team/app:v1").digest == back.digest
    with pytest.raises(RefNotFoundError):
        read_docker_archive(path, "nope")
    with pytest.raises(RefNotFoundError):
        read_docker_archive(path, "example.com:5000/team/app")  # :latest is not there


def _write_tar(path: Path, members: dict[str, bytes | str]) -> Path:
    """A tar with regular files (bytes) and symlinks (str: the target)."""
    with tarfile.open(path, "w") as tar:
        for name, value in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(value, str):
                info.type, info.linkname = tarfile.SYMTYPE, value
                tar.addfile(info)
            else:
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
    return path


def test_reads_legacy_docker_save_layout_with_symlinked_layers(tmp_path: Path) -> None:
    image = small_image({"a": b"1"}, {"a": b"1"})  # the same layer twice
    tar = tar_of({"a": b"1"})
    config_name = f"{image.config_digest.hex}.json"
    path = _write_tar(tmp_path / "legacy.tar", {
        config_name: image.config_bytes,
        "aaaa/VERSION": b"1.0", "aaaa/layer.tar": tar, "aaaa/json": b"{}",
        "bbbb/VERSION": b"1.0", "bbbb/layer.tar": "../aaaa/layer.tar",
        "manifest.json": json.dumps([{"Config": config_name, "RepoTags": ["old:1"],
                                      "Layers": ["aaaa/layer.tar", "bbbb/layer.tar"]}]).encode(),
        "repositories": b'{"old":{"1":"bbbb"}}',
    })
    back = read_docker_archive(path)
    assert [x.diff_id for x in back.layers] == [Digest.from_bytes(tar)] * 2
    assert back.layers[1].open_uncompressed().read() == tar


@pytest.mark.parametrize("layers, message", [
    (["../../etc/passwd"], "escapes the archive"),
    (["/etc/passwd"], "escapes the archive"),
    (["link/layer.tar"], "escapes the archive"),
])
def test_docker_archive_paths_are_confined(tmp_path: Path, layers: list[str],
                                           message: str) -> None:
    image = small_image({"a": b"1"})
    path = _write_tar(tmp_path / "evil.tar", {
        "c.json": image.config_bytes, "link": "../../..",
        "manifest.json": json.dumps([{"Config": "c.json", "Layers": layers}]).encode()})
    with pytest.raises(ImageFormatError, match=message):
        read_docker_archive(path)


def test_docker_archive_layer_must_match_diff_id(tmp_path: Path) -> None:
    image = small_image({"a": b"1"})
    path = _write_tar(tmp_path / "bad.tar", {
        "c.json": image.config_bytes, "l.tar": tar_of({"a": b"2"}),
        "manifest.json": json.dumps([{"Config": "c.json", "Layers": ["l.tar"]}]).encode()})
    with pytest.raises(DigestMismatchError):
        read_docker_archive(path)
    named = f"{Digest.from_bytes(b'x').hex}.json"
    path = _write_tar(tmp_path / "badconfig.tar", {
        named: image.config_bytes, "l.tar": tar_of({"a": b"1"}),
        "manifest.json": json.dumps([{"Config": named, "Layers": ["l.tar"]}]).encode()})
    with pytest.raises(DigestMismatchError):
        read_docker_archive(path)


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    image = small_image({"a": b"1"})
    broken = image.layers[0].__class__(image.layers[0].digest, image.layers[0].diff_id,
                                       image.layers[0].size, image.layers[0].media_type,
                                       type(image.layers[0].source)())
    from dataclasses import replace
    bad = replace(image, layers=(broken,))
    with pytest.raises(Exception):  # noqa: B017 - whatever the blob source raises
        write_oci_archive(tmp_path / "out.tar", bad, "x")
    assert os.listdir(tmp_path) == []


def test_docker_archive_with_compressed_layers(tmp_path: Path) -> None:
    """Some tools put gzip layers in docker-archives; the diff id is checked on reading."""
    import gzip
    image = small_image({"a": b"1"})
    tar = tar_of({"a": b"1"})
    path = _write_tar(tmp_path / "gz.tar", {
        "c.json": image.config_bytes, "l.tar.gz": gzip.compress(tar, mtime=0),
        "manifest.json": json.dumps([{"Config": "c.json", "Layers": ["l.tar.gz"]}]).encode()})
    layer = read_docker_archive(path).layers[0]
    assert layer.media_type == mt.OCI_LAYER_GZIP
    assert layer.digest == Digest.from_bytes(gzip.compress(tar, mtime=0))
    assert layer.open_uncompressed().read() == tar
    # the same blob under a config that promises other content fails once decompressed
    other = small_image({"a": b"2"})
    path = _write_tar(tmp_path / "gzbad.tar", {
        "c.json": other.config_bytes, "l.tar.gz": gzip.compress(tar, mtime=0),
        "manifest.json": json.dumps([{"Config": "c.json", "Layers": ["l.tar.gz"]}]).encode()})
    with pytest.raises(DigestMismatchError):
        read_docker_archive(path).layers[0].open_uncompressed().read()
    # written back out, the layer stays as it is (docker load decompresses it)
    write_docker_archive(tmp_path / "out.tar", read_docker_archive(tmp_path / "gz.tar"), ["x"])
    back = read_docker_archive(tmp_path / "out.tar", "x")
    assert back.layers[0].digest == Digest.from_bytes(gzip.compress(tar, mtime=0))
    assert back.layers[0].open_uncompressed().read() == tar


def test_mislabelled_uncompressed_layer_still_checks_diff_id() -> None:
    import gzip
    from dataclasses import replace as dc_replace

    from cloche.oci.image import Layer, MemoryBlobSource
    source = MemoryBlobSource()
    blob = gzip.compress(tar_of({"a": b"1"}), mtime=0)
    digest = source.put(blob)
    layer = Layer(digest, Digest.from_bytes(b"wrong"), len(blob), mt.OCI_LAYER_TAR, source)
    with pytest.raises(DigestMismatchError):
        layer.open_uncompressed().read()
    good = dc_replace(layer, diff_id=Digest.from_bytes(tar_of({"a": b"1"})))
    assert good.open_uncompressed().read() == tar_of({"a": b"1"})


def test_hostile_oci_archives_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageFormatError, match="escapes the archive"):
        OciArchive(_write_tar(tmp_path / "dots.tar", {"../evil": b"x", "oci-layout": b"{}"}))
    image = small_image({"a": b"1"})
    buf = io.BytesIO()
    write_oci_archive(buf, image, "v1")
    members = {}
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        for m in tar.getmembers():
            if m.isfile():
                members[m.name] = tar.extractfile(m).read()  # type: ignore[union-attr]
    # the layer blob replaced by a link that climbs out of the archive
    members[f"blobs/sha256/{image.layers[0].digest.hex}"] = "../../../etc/passwd"
    archive = OciArchive(_write_tar(tmp_path / "link.tar", members))
    with pytest.raises(ImageFormatError, match="escapes the archive"):
        archive.image("v1").layers[0].open()
