"""pull_image / push_image / push_stored with the real store and Image values."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from cloche.errors import ImageNotFoundError
from cloche.oci.config import ImageConfig
from cloche.oci.image import Image, Layer
from cloche.oci.platform import Platform
from cloche.oci.reference import Reference
from cloche.registry.client import RegistryClient
from cloche.registry.pull import pull_image
from cloche.registry.push import push_image, push_manifest, push_stored
from cloche.store import Store
from tests.fixtures.services import Registry
from tests.registry.images import layer_from_files, make_image, make_index

pytestmark = pytest.mark.registry


def _tar(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_push_image_value_then_pull_image(registry: Registry, client: RegistryClient,
                                          tmp_path: Path) -> None:
    layer = Layer.from_tar_bytes(_tar({"hello.txt": b"hi"}))
    config = ImageConfig.from_dict({"architecture": "amd64", "os": "linux",
                                    "rootfs": {"type": "layers", "diff_ids": [str(layer.diff_id)]},
                                    "config": {"Env": ["A=1"]}})
    image = Image.from_config(config, [layer])
    name = f"{registry.host}/api/value:1"
    result = push_image(image, name, client=client)
    assert result.digest == image.digest and result.uploaded == 2

    store = Store.open(tmp_path / "store")
    pulled = pull_image(name, store, client=client)
    assert pulled.digest == image.digest
    assert pulled.config.env_map["A"] == "1"
    assert store.resolve(name).digest == image.digest
    assert store.image(name).layers[0].diff_id == layer.diff_id
    with store.image(name).layers[0].open() as f:
        assert f.read() == layer.source.open(layer.digest).read()


def test_pull_index_names_the_platform_image(registry: Registry, client: RegistryClient,
                                             tmp_path: Path) -> None:
    store = Store.open(tmp_path / "src")
    amd = make_image(store.blobs, [layer_from_files({"a": b"amd"})], arch="amd64", label="a")
    arm = make_image(store.blobs, [layer_from_files({"a": b"arm"})], arch="arm64", label="b")
    data, _ = make_index(store.blobs, {"linux/amd64": amd, "linux/arm64": arm})
    name = f"{registry.host}/api/multi:1"
    push_manifest(name, data, None, store.blobs, client=client)
    dst = Store.open(tmp_path / "dst")
    image = pull_image(name, dst, "linux/arm64", client=client)
    assert image.digest == arm.digest and image.platform == Platform("linux", "arm64")
    assert dst.resolve(name).digest == arm.digest


def test_push_stored_mounts_from_the_source_repository(registry: Registry, tmp_path: Path,
                                                       make_client: Callable[..., RegistryClient],
                                                       busybox_rootfs: Path) -> None:
    store = Store.open(tmp_path / "store")
    img = make_image(store.blobs, [layer_from_files({"m": b"mount me"})])
    from cloche.oci.descriptor import Descriptor
    first = f"{registry.host}/api/src:1"
    store.tag(first, Descriptor(img.media_type, img.digest, len(img.manifest_bytes)))
    client = make_client()
    assert push_stored(store, first, client=client).uploaded == 2
    moved = push_stored(store, first, f"{registry.host}/api/dst:1", client=client)
    assert (moved.mounted, moved.uploaded) == (2, 0)
    with pytest.raises(ImageNotFoundError):
        push_stored(store, f"{registry.host}/api/never:1", client=client)


def test_pull_by_digest_is_stored_unnamed(registry: Registry, client: RegistryClient,
                                          tmp_path: Path) -> None:
    src = Store.open(tmp_path / "src")
    img = make_image(src.blobs, [layer_from_files({"d": b"digest"})])
    push_manifest(f"{registry.host}/api/dig:1", img.manifest_bytes, img.media_type, src.blobs,
                  client=client)
    dst = Store.open(tmp_path / "dst")
    ref = Reference.parse(f"{registry.host}/api/dig@{img.digest}")
    assert pull_image(ref, dst, client=client).digest == img.digest
    assert dst.resolve(str(img.digest)).digest == img.digest
    assert [n for n, _ in dst.names()] == []
