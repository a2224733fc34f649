"""Image values in and out of the store, including multi-platform indexes (what pulls tag)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import BinaryIO

import pytest

from cloche.oci import mediatypes as mt
from cloche.oci.config import History, ImageConfig
from cloche.oci.descriptor import Descriptor
from cloche.oci.digest import Digest, DigestMismatchError
from cloche.oci.errors import PlatformNotFoundError
from cloche.oci.image import Image, Layer
from cloche.oci.manifest import Index
from cloche.oci.platform import Platform
from cloche.ops.describe import inspect, summaries
from cloche.store import Store


def _tar(content: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("file")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def make_image(arch: str, content: bytes = b"x") -> Image:
    layer = Layer.from_tar_bytes(_tar(content + arch.encode()))
    config = ImageConfig(architecture=arch, os="linux", created="2024-05-06T07:08:09Z",
                         history=(History(created_by=f"made for {arch}"),),
                         diff_ids=(layer.diff_id,))
    return Image.from_config(config, [layer])


class LyingSource:
    """A blob source that answers every digest with the same wrong bytes."""

    def open(self, digest: Digest) -> BinaryIO:
        return io.BytesIO(b"not the layer")

    def size(self, digest: Digest) -> int:
        return len(b"not the layer")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store")


def test_put_and_read_back(store: Store) -> None:
    image = make_image("amd64")
    desc = store.put_image(image, ["app:1", "app:2"])
    assert desc.digest == image.digest and desc.platform == Platform("linux", "amd64")
    back = store.image("app:2")
    assert back.digest == image.digest and back.config_bytes == image.config_bytes
    with back.layers[0].open() as f, image.layers[0].open() as g:
        assert f.read() == g.read()
    assert back.layers[0].source is store.blobs  # layers stay in the store's files
    assert store.put_image(image) == desc  # idempotent; unnamed but already present


def test_put_unnamed_is_dangling(store: Store) -> None:
    image = make_image("amd64")
    store.put_image(image)
    [entry] = store.list_images()
    assert entry.name is None and entry.image_id == image.config_digest
    assert store.image(image.config_digest.short).digest == image.digest


def test_put_refuses_a_layer_whose_bytes_lie(store: Store) -> None:
    good = make_image("amd64")
    liar = LyingSource()
    bad_layer = Layer(good.layers[0].digest, good.layers[0].diff_id, len(b"not the layer"),
                      good.layers[0].media_type, liar)
    bad = Image(good.config_bytes, (bad_layer,))
    with pytest.raises(DigestMismatchError):
        store.put_image(bad, ["bad"])
    assert store.names() == []
    assert not store.blobs.exists(good.layers[0].digest)


def test_multi_platform_index(store: Store) -> None:
    amd, arm = make_image("amd64"), make_image("arm64")
    children = [store.put_image(img) for img in (amd, arm)]
    store.index.remove_digest(str(children[0].digest))  # only the index will name them
    store.index.remove_digest(str(children[1].digest))
    index_bytes = Index(tuple(children)).to_json()
    index_digest = store.blobs.put_bytes(index_bytes)
    store.tag("multi:1", Descriptor(mt.OCI_INDEX, index_digest, len(index_bytes)))
    assert store.image("multi:1", Platform.parse("linux/arm64")).digest == arm.digest
    assert store.image("multi:1", Platform.parse("linux/amd64")).digest == amd.digest
    with pytest.raises(PlatformNotFoundError):
        store.image("multi:1", Platform.parse("linux/s390x"))
    [entry] = store.list_images()
    assert entry.image_id == index_digest  # Docker's containerd store shows the index digest
    assert store.resolve(index_digest.short).digest == index_digest
    assert store.gc(grace_seconds=0).blobs_removed == 0  # children and their blobs are live
    host = Platform.host()
    if host.architecture in ("amd64", "arm64"):
        doc = inspect(store, "multi:1")
        assert doc["Architecture"] == host.architecture and doc["RepoTags"] == ["multi:1"]
        [row] = summaries(store)
        assert (row.repository, row.tag, row.image_id) == ("multi", "1", str(index_digest))
    store.untag("multi:1")
    assert store.gc(grace_seconds=0).blobs_removed == 7  # index, 2 manifests, 2 configs, 2 layers
