"""Items 13, 14 and 23 of issue 9: what a hostile base image's layers and config can do.

13. A config whose ``rootfs.diff_ids`` lie about the layers is refused (pull, load, and when
    a stored one is flattened), naming the image and the layer; so is a count mismatch.
14. A 99-byte layer holding one GNU sparse member of 2 GiB stays a sparse file; a layer's
    expanded size is bounded (``CLOCHE_MAX_LAYER_SIZE``).
23. overlayfs' private xattrs in a layer (``trusted.overlay.*``, ``user.overlay.*``) are not
    applied: a base image cannot make files vanish from RUN's view of its own tree.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from cloche import api
from cloche.errors import ClocheError
from cloche.fs.limits import LayerTooLargeError
from cloche.layers.apply import apply_layer
from cloche.layers.diffids import DiffIdMismatchError
from cloche.layers.reader import LayerReader
from cloche.oci.archive import write_oci_archive
from cloche.oci.digest import Digest
from cloche.oci.image import Image, Layer
from cloche.oci.mutate import append_layers
from cloche.registry.push import push_manifest, push_stored
from tests.engine.conftest import BASE, Builder, layer_contents, rootfs
from tests.fixtures.services import Registry

pytestmark = pytest.mark.timeout(300)


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def file_info(name: str, **pax: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    info.pax_headers = dict(pax)
    return info


def dir_info(name: str, **pax: str) -> tarfile.TarInfo:
    info = file_info(name, **pax)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info


def with_layer(builder: Builder, tar: bytes, name: str) -> Image:
    """busybox-test:1 plus one layer made of ``tar``, stored as ``name``."""
    image = append_layers(builder.store.image(BASE), [Layer.from_tar_bytes(tar)])
    builder.store.put_image(image, [name])
    return image


# -- 13: diff ids ----------------------------------------------------------------------------

FALSE = Digest.from_bytes(b"some other tar")


def lying(image: Image, *, extra: bool = False) -> Image:
    """``image`` with a config that lies about its last layer's diff id (or lists one more)."""
    config = json.loads(image.config_bytes)
    layers = list(image.layers)
    if extra:
        config["rootfs"]["diff_ids"].append(str(FALSE))
    else:
        config["rootfs"]["diff_ids"][-1] = str(FALSE)
        layers[-1] = dataclasses.replace(layers[-1], diff_id=FALSE)
    return Image(json.dumps(config).encode(), tuple(layers), image.media_type)


def _store_lying(builder: Builder, name: str, *, extra: bool = False) -> Image:
    good = append_layers(builder.store.image(BASE),
                         [Layer.from_tar_bytes(tar_of((file_info("hello"), b"hi\n")))])
    bad = lying(good, extra=extra)
    builder.store.put_image(bad, [name])  # the store's own put: no check, as a stale store
    return bad


def test_pulled_image_whose_config_lies_is_refused(builder: Builder, registry: Registry) -> None:
    bad = _store_lying(builder, "lie-src:1")
    ref = f"{registry.host}/evil/lie:1"
    push_stored(builder.store, "lie-src:1", ref)
    layer = bad.layers[-1].digest
    with pytest.raises(ClocheError) as info:
        builder.build(f"FROM {ref}\nLABEL x=1\n")
    text = str(info.value)
    assert ref in text and str(layer) in text and "diff" in text, text
    with pytest.raises(DiffIdMismatchError) as pulled:
        api.pull(ref, root=builder.root)
    assert ref in str(pulled.value) and str(layer) in str(pulled.value)
    assert all(name != ref for name, _ in builder.store.names())  # no name for it


def test_pulled_image_with_one_diff_id_too_many_is_refused(builder: Builder,
                                                           registry: Registry) -> None:
    """Already refused before issue 9 (Image.from_manifest counts them): kept as a guard."""
    bad = _store_lying(builder, "extra-src:1", extra=True)
    ref = f"{registry.host}/evil/extra:1"
    push_manifest(ref, bad.manifest_bytes, bad.media_type, builder.store.blobs)
    with pytest.raises(ClocheError) as info:
        builder.build(f"FROM {ref}\nLABEL x=1\n")
    assert ref in str(info.value) and "diff ids" in str(info.value)


def test_stored_image_that_lies_is_refused_when_flattened(builder: Builder) -> None:
    bad = _store_lying(builder, "lie-local:1")
    with pytest.raises(ClocheError) as info:
        builder.build("FROM lie-local:1\nRUN true\n")
    text = str(info.value)
    assert "lie-local:1" in text and str(bad.layers[-1].digest) in text
    assert getattr(info.value, "line", None) == 1
    images = builder.root / "snapshots" / "images"
    assert not images.exists() or not any(images.glob("*/rootfs")), "no half-checked rootfs"
    with pytest.raises(ClocheError):  # COPY --from the image is refused the same way
        builder.build(f"FROM {BASE}\nCOPY --from=lie-local:1 /hello /hello\n")


def test_loaded_archive_whose_config_lies_is_refused(builder: Builder, tmp_path: Path) -> None:
    bad = _store_lying(builder, "lie-save:1")
    archive = tmp_path / "lie.tar"
    write_oci_archive(archive, bad, "docker.io/evil/loaded:1")
    with pytest.raises(DiffIdMismatchError) as info:
        api.load(archive, root=builder.root)
    assert "evil/loaded:1" in str(info.value) and str(bad.layers[-1].digest) in str(info.value)
    assert all("loaded" not in name for name, _ in builder.store.names())


# -- 14: sparse files and the expanded size -------------------------------------------------

def _octal(value: int, width: int) -> bytes:
    """A tar number field: octal, or GNU's base-256 when it does not fit."""
    if value < 8 ** (width - 1):
        return f"{value:0{width - 1}o}".encode() + b"\0"
    return b"\x80" + value.to_bytes(width - 1, "big")


def gnu_sparse_tar(name: str, size: int, regions: list[tuple[int, bytes]]) -> bytes:
    """A tar of one old-GNU sparse member (type 'S'): tarfile reads these but cannot write
    them, so the header is made by hand (GNU tar's format: 4 map slots, realsize at 483)."""
    assert len(regions) <= 4
    data = b"".join(chunk for _, chunk in regions)
    header = bytearray(512)
    header[0:len(name)] = name.encode()
    header[100:108] = _octal(0o644, 8)
    header[108:116] = _octal(0, 8)
    header[116:124] = _octal(0, 8)
    header[124:136] = _octal(len(data), 12)  # what is stored: the data regions only
    header[136:148] = _octal(0, 12)
    header[156:157] = b"S"
    header[257:265] = b"ustar  \0"  # the GNU magic
    pos = 386
    for offset, chunk in regions:
        header[pos:pos + 12] = _octal(offset, 12)
        header[pos + 12:pos + 24] = _octal(len(chunk), 12)
        pos += 24
    header[483:495] = _octal(size, 12)  # the file's real size
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}".encode() + b"\0 "
    return bytes(header) + data + b"\0" * ((-len(data)) % 512) + b"\0" * 1024


TWO_GIB = 2 << 30
SPARSE = gnu_sparse_tar("big", TWO_GIB, [(4096, b"head\n"), (TWO_GIB - 5, b"tail\n")])


def _assert_sparse(path: Path) -> None:
    st = os.stat(path)
    assert st.st_size == TWO_GIB
    assert st.st_blocks * 512 < 1 << 20, f"{st.st_blocks * 512} bytes allocated"
    with open(path, "rb") as f:
        assert f.read(5) == b"\0" * 5
        f.seek(4096)
        assert f.read(5) == b"head\n"
        f.seek(TWO_GIB - 5)
        assert f.read() == b"tail\n"


def test_sparse_member_is_extracted_sparse(tmp_path: Path) -> None:
    blob = gzip.compress(SPARSE, 9, mtime=0)
    assert len(blob) < 200  # a tiny layer...
    apply_layer(io.BytesIO(blob), tmp_path / "out")
    _assert_sparse(tmp_path / "out" / "big")  # ...that does not take 2 GiB of disk


def test_sparse_base_image_in_a_build(builder: Builder) -> None:
    image = with_layer(builder, SPARSE, "sparse:1")
    result = builder.build("FROM sparse:1\nRUN test $(stat -c %s /big) = 2147483648 "
                           "&& tail -c 5 /big > /tail\n")
    assert layer_contents(result.image.layers[-1])["tail"] == b"tail\n"
    _assert_sparse(builder.root / "snapshots" / "images" / image.digest.hex / "rootfs" / "big")


def test_expanded_size_is_bounded(builder: Builder, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # by default (64 GiB): a 100 TiB sparse file is refused as its header is read (only
    # read here: a regression must not be able to fill the disk of the machine running this)
    huge = gnu_sparse_tar("huge", 100 << 40, [(0, b"x")])
    with pytest.raises(LayerTooLargeError, match="CLOCHE_MAX_LAYER_SIZE"):
        list(LayerReader(io.BytesIO(gzip.compress(huge))))
    # a lower bound, set by the caller: the 2 GiB sparse file and a gzip bomb of zeros
    monkeypatch.setenv("CLOCHE_MAX_LAYER_SIZE", "1G")
    with pytest.raises(LayerTooLargeError):
        apply_layer(io.BytesIO(gzip.compress(SPARSE)), tmp_path / "sparse")
    monkeypatch.setenv("CLOCHE_MAX_LAYER_SIZE", "8M")
    bomb = tar_of((file_info("zeros"), bytes(16 << 20)))
    with pytest.raises(LayerTooLargeError):
        apply_layer(io.BytesIO(gzip.compress(bomb)), tmp_path / "bomb")
    # in a build: the error names the image and the layer
    image = with_layer(builder, SPARSE, "sparse-big:1")
    with pytest.raises(ClocheError) as info:  # located at the FROM line
        builder.build("FROM sparse-big:1\nRUN true\n")
    assert "sparse-big:1" in str(info.value) and str(image.layers[-1].digest) in str(info.value)
    assert getattr(info.value, "line", None) == 1 and "8 MiB" in str(info.value)


def test_sparse_file_made_by_run_keeps_its_content(builder: Builder, tmp_path: Path) -> None:
    result = builder.build(f"FROM {BASE}\nRUN dd if=/dev/zero of=/s bs=1M count=0 seek=64 "
                           "&& printf end >> /s\n")
    path = rootfs(result.image, tmp_path / "out") / "s"
    st = os.stat(path)
    assert st.st_size == (64 << 20) + 3
    with open(path, "rb") as f:
        data = f.read()
    assert data.endswith(b"end") and data[:-3] == bytes(64 << 20)
    assert st.st_blocks * 512 < 4 << 20  # its zeros are holes again


# -- 23: overlayfs' private xattrs ----------------------------------------------------------

X = "SCHILY.xattr."
OVERLAY_LAYER = tar_of(
    (dir_info("opq", **{X + "trusted.overlay.opaque": "x", X + "user.overlay.opaque": "y",
                        X + "user.kept": "yes"}), None),
    (file_info("opq/f", **{X + "trusted.overlay.whiteout": ""}), b""),
    (file_info("opq/g"), b"data\n"),
    (dir_info("moved", **{X + "trusted.overlay.redirect": "/opq"}), None),
)


def test_overlay_xattrs_are_not_applied(tmp_path: Path) -> None:
    out = tmp_path / "out"
    apply_layer(io.BytesIO(OVERLAY_LAYER), out)
    for path, name in ((out / "opq", "trusted.overlay.opaque"),
                       (out / "opq", "user.overlay.opaque"),
                       (out / "opq/f", "trusted.overlay.whiteout"),
                       (out / "moved", "trusted.overlay.redirect")):
        with pytest.raises(OSError):
            os.getxattr(path, name)
    assert os.getxattr(out / "opq", "user.kept") == b"yes"


def test_a_base_with_overlay_xattrs_is_plain_directories(builder: Builder) -> None:
    with_layer(builder, OVERLAY_LAYER, "ovl:1")
    result = builder.build("FROM ovl:1\nRUN cat /opq/f /opq/g > /seen && ls /opq > /listed\n")
    files = layer_contents(result.image.layers[-1])
    assert files["seen"] == b"data\n"
    assert files["listed"].split() == [b"f", b"g"]
