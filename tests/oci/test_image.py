"""Image and Layer values and the mutate functions, with blobs held in memory."""

from __future__ import annotations

import gzip
import json

import pytest

from cloche.oci import mediatypes as mt
from cloche.oci.config import History, ImageConfig
from cloche.oci.digest import Digest, DigestMismatchError
from cloche.oci.errors import BlobNotFoundError, ImageFormatError
from cloche.oci.image import Image, Layer, MemoryBlobSource
from cloche.oci.mutate import (
    add_history,
    append_layers,
    canonicalise,
    empty_image,
    replace_layers,
    rfc3339,
    set_annotations,
    set_config,
    set_history,
    with_media_type,
)
from cloche.oci.platform import Platform
from tests.oci.helpers import small_image, tar_of


def test_layer_streams_and_verifies() -> None:
    tar = tar_of({"a.txt": b"hello"})
    for compression in ("gzip", "zstd", "none"):
        layer = Layer.from_tar_bytes(tar, compression)
        assert layer.diff_id == Digest.from_bytes(tar)
        assert layer.media_type == mt.layer_type(compression)
        assert layer.open_uncompressed().read() == tar
        assert Digest.from_bytes(layer.open().read()) == layer.digest


def test_layer_with_wrong_bytes_fails_at_end_of_stream() -> None:
    source = MemoryBlobSource()
    good = Layer.from_tar_bytes(tar_of({"a": b"1"}), "gzip", source)
    liar = Layer(good.digest, Digest.from_bytes(b"not the tar"), good.size, good.media_type,
                 source)
    with pytest.raises(DigestMismatchError):
        liar.open_uncompressed().read()
    forged = MemoryBlobSource({good.digest: gzip.compress(b"other", mtime=0)})
    tampered = Layer(good.digest, good.diff_id, good.size, good.media_type, forged)
    with pytest.raises((DigestMismatchError, ImageFormatError)):
        tampered.open().read()
    missing = Layer(good.digest, good.diff_id, good.size, good.media_type, MemoryBlobSource())
    with pytest.raises(BlobNotFoundError):
        missing.open()


def test_image_manifest_is_lazy_and_consistent() -> None:
    image = small_image({"a": b"1"}, {"b": b"2"})
    manifest = image.manifest
    assert manifest.config.digest == image.config_digest == Digest.from_bytes(image.config_bytes)
    assert [d.digest for d in manifest.layers] == [x.digest for x in image.layers]
    assert image.config.diff_ids == tuple(x.diff_id for x in image.layers)
    assert image.digest == Digest.from_bytes(image.manifest_bytes)
    assert image.descriptor().platform == Platform("linux", "amd64")
    assert [h.created_by for h in image.config.history] == ["COPY layer0 /", "COPY layer1 /"]


def test_from_config_rejects_diff_id_mismatch() -> None:
    layer = Layer.from_tar_bytes(tar_of({"a": b"1"}))
    with pytest.raises(ImageFormatError, match="diff_ids"):
        Image.from_config(ImageConfig(), [layer])


def test_from_manifest_keeps_exact_bytes_and_reads_config() -> None:
    source = MemoryBlobSource()
    image = small_image({"a": b"1"}, source=source)
    source.put(image.config_bytes)
    pretty = json.dumps(json.loads(image.manifest_bytes), indent=3).encode()
    again = Image.from_manifest(pretty, source)
    assert again.manifest_bytes == pretty and again.digest == Digest.from_bytes(pretty)
    assert again.config == image.config and again.layers == image.layers


def test_from_manifest_verifies_config() -> None:
    source = MemoryBlobSource()
    image = small_image({"a": b"1"}, source=source)
    source._blobs[image.config_digest] = image.config_bytes + b" "
    with pytest.raises(ImageFormatError):
        Image.from_manifest(image.manifest_bytes, source)


def test_append_set_history_and_config() -> None:
    base = small_image({"a": b"1"})
    layer = Layer.from_tar_bytes(tar_of({"b": b"2"}))
    grown = append_layers(base, [layer], History(created_by="RUN x"))
    assert grown.layers == base.layers + (layer,)
    assert grown.config.diff_ids[-1] == layer.diff_id
    assert grown.config.history[-1].created_by == "RUN x"
    assert base.config.diff_ids == (base.layers[0].diff_id,)  # the original is unchanged
    with pytest.raises(ImageFormatError):
        append_layers(base, [layer], [History(), History()])
    noted = add_history(grown, History(created_by="ENV A=1"))
    assert noted.config.history[-1].empty_layer and noted.layers == grown.layers
    with pytest.raises(ImageFormatError, match="2 layers"):
        set_history(grown, [History(created_by="only one")])
    cfg = grown.config.with_env(A="1").replace(diff_ids=())
    changed = set_config(grown, cfg)
    assert changed.config.env == ("A=1",)
    assert changed.config.diff_ids == grown.config.diff_ids  # rootfs follows the layers


def test_canonicalise_gives_reproducible_digests() -> None:
    a = canonicalise(small_image({"a": b"1"}), 1_700_000_000)
    b = canonicalise(small_image({"a": b"1"}), 1_700_000_000)
    assert a.digest == b.digest
    assert a.config.created == "2023-11-14T22:13:20Z"
    assert {h.created for h in a.config.history} == {"2023-11-14T22:13:20Z"}
    assert canonicalise(a, 0).digest != a.digest
    assert rfc3339(1.25) == "1970-01-01T00:00:01.25Z"


def test_docker_and_oci_media_types() -> None:
    image = small_image({"a": b"1"})
    docker = with_media_type(image, docker=True)
    doc = json.loads(docker.manifest_bytes)
    assert doc["mediaType"] == mt.DOCKER_MANIFEST
    assert doc["config"]["mediaType"] == mt.DOCKER_CONFIG
    assert doc["layers"][0]["mediaType"] == mt.DOCKER_LAYER_GZIP
    assert docker.config_bytes == image.config_bytes
    assert with_media_type(docker, docker=False).digest == image.digest


def test_annotations_and_replace_layers() -> None:
    image = set_annotations(small_image({"a": b"1"}), {"org.opencontainers.image.title": "t"})
    assert json.loads(image.manifest_bytes)["annotations"] == {
        "org.opencontainers.image.title": "t"}
    tar = tar_of({"a": b"1"})
    zstd = Layer.from_tar_bytes(tar, "zstd")
    recompressed = replace_layers(image, [zstd])
    assert recompressed.config_bytes == image.config_bytes
    assert recompressed.manifest.layers[0].media_type == mt.OCI_LAYER_ZSTD
    with pytest.raises(ImageFormatError):
        replace_layers(image, [Layer.from_tar_bytes(tar_of({"b": b"2"}))])


def test_empty_image_is_scratch() -> None:
    image = empty_image(Platform.parse("linux/arm64"))
    assert image.layers == () and image.config.diff_ids == ()
    assert image.config.architecture == "arm64"
    assert json.loads(image.manifest_bytes)["layers"] == []
