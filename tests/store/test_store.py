"""Names, lookups and garbage collection of the local store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cloche.errors import ImageNotFoundError, InvalidReferenceError, StoreError
from cloche.oci.descriptor import Descriptor
from cloche.oci.digest import Digest
from cloche.store import REF_NAME
from cloche.store.store import AmbiguousImageError, Store
from tests.store.helpers import config_digest, put_raw_image


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store")


def test_layout_files(store: Store) -> None:
    assert json.loads((store.root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((store.root / "index.json").read_text())
    assert index["schemaVersion"] == 2 and index["manifests"] == []


def test_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOCHE_ROOT", str(tmp_path / "env-root"))
    assert Store.open().root == tmp_path / "env-root"
    assert (tmp_path / "env-root" / "index.json").is_file()


def test_unwritable_root_is_a_store_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        with pytest.raises(StoreError):
            Store.open(blocker / "sub")
    else:
        tmp_path.chmod(0o500)
        with pytest.raises(StoreError):
            Store.open(tmp_path / "sub")


def test_tag_normalises_and_resolves(store: Store) -> None:
    desc = put_raw_image(store, "a")
    assert store.tag("busybox", desc) == "docker.io/library/busybox:latest"
    for spelling in ("busybox", "busybox:latest", "library/busybox", "docker.io/library/busybox:latest"):
        assert store.resolve(spelling) == desc
    assert store.names() == [("docker.io/library/busybox:latest", desc)]
    index = json.loads((store.root / "index.json").read_text())
    assert index["manifests"][0]["annotations"][REF_NAME] == "docker.io/library/busybox:latest"


def test_resolve_by_digest_id_and_short_id(store: Store) -> None:
    desc = put_raw_image(store, "a")
    store.tag("localhost:5000/app:1", desc)
    image_id = config_digest(store, desc)
    assert store.resolve(str(desc.digest)) == desc
    assert store.resolve(str(image_id)) == desc
    assert store.resolve(image_id.hex) == desc
    assert store.resolve(image_id.short) == desc
    assert store.resolve(f"localhost:5000/app@{desc.digest}") == desc
    found = store.lookup(image_id.short)
    assert found.image_id == image_id and found.familiar == "localhost:5000/app:1"


def test_unknown_image(store: Store) -> None:
    with pytest.raises(ImageNotFoundError) as info:
        store.resolve("nothing:here")
    assert "nothing:here" in info.value.render()


def test_ambiguous_short_id(store: Store) -> None:
    descs = [put_raw_image(store, str(i)) for i in range(40)]
    for i, d in enumerate(descs):
        store.tag(f"img{i}", d)
    ids = [config_digest(store, d).hex for d in descs]
    first_chars = [i[0] for i in ids]
    shared = next(c for c in first_chars if first_chars.count(c) > 1)  # 40 ids, 16 letters
    with pytest.raises(AmbiguousImageError):
        store.resolve(shared)


def test_tag_refuses_missing_manifest_and_digest_names(store: Store) -> None:
    ghost = Descriptor("application/vnd.oci.image.manifest.v1+json", Digest.from_bytes(b"x"), 1)
    with pytest.raises(StoreError):
        store.tag("ghost", ghost)
    desc = put_raw_image(store, "a")
    with pytest.raises(InvalidReferenceError):
        store.tag(f"app@{desc.digest}", desc)
    with pytest.raises(InvalidReferenceError):
        store.tag("Bad Name", desc)


def test_retag_leaves_old_image_dangling(store: Store) -> None:
    old, new = put_raw_image(store, "old"), put_raw_image(store, "new")
    store.tag("app", old)
    store.tag("app", new)
    listing = store.list_images()
    assert [(s.name, s.descriptor.digest) for s in listing] == [
        ("docker.io/library/app:latest", new.digest), (None, old.digest)]
    store.tag("app:old", old)  # naming it again removes the dangling entry
    assert [s.name for s in store.list_images()] == [
        "docker.io/library/app:latest", "docker.io/library/app:old"]


def test_untag_and_remove(store: Store) -> None:
    desc = put_raw_image(store, "a")
    store.tag("one", desc)
    store.tag("two", desc)
    assert store.untag("one") == desc
    with pytest.raises(ImageNotFoundError):
        store.untag("one")
    assert [n for n, _ in store.names()] == ["docker.io/library/two:latest"]
    store.tag("three", desc)
    assert store.remove(desc.digest) == ["docker.io/library/two:latest",
                                         "docker.io/library/three:latest"]
    assert store.names() == []
    with pytest.raises(ImageNotFoundError):
        store.remove(desc.digest)


def test_gc_removes_only_unreferenced_blobs(store: Store) -> None:
    keep, drop = put_raw_image(store, "keep"), put_raw_image(store, "drop")
    store.tag("keep", keep)
    store.tag("drop", drop)
    before = set(store.blobs.digests())
    assert len(before) == 6
    assert store.gc(grace_seconds=0).blobs_removed == 0
    store.untag("drop")
    report = store.gc(grace_seconds=3600)  # too recent: kept for a concurrent writer
    assert report.blobs_removed == 0
    report = store.gc(grace_seconds=0)
    assert report.blobs_removed == 3 and report.bytes_freed > 0
    assert not store.blobs.has(drop.digest)
    assert store.blobs.has(keep.digest)
    assert store.image_id(keep) == config_digest(store, keep)
    assert store.blobs.has(config_digest(store, keep))


def test_gc_extra_roots(store: Store) -> None:
    cached = put_raw_image(store, "cache")
    store.gc(grace_seconds=0, extra_roots=[cached.digest])
    assert store.blobs.has(config_digest(store, cached))
    store.gc(grace_seconds=0)
    assert list(store.blobs.digests()) == []


def test_corrupt_index_is_reported(store: Store) -> None:
    (store.root / "index.json").write_text("{not json")
    with pytest.raises(StoreError) as info:
        store.names()
    assert "index.json" in info.value.render()


def test_gc_spares_blobs_someone_just_relied_on(store: Store) -> None:
    """A pull that finds a layer already stored (``has``) refreshes it, so gc keeps it."""
    old_a = store.blobs.put_bytes(b"unreferenced a")
    old_b = store.blobs.put_bytes(b"unreferenced b")
    for d in (old_a, old_b):
        os.utime(store.blobs.path(d), (1_000_000_000, 1_000_000_000))  # written in 2001
    assert store.blobs.exists(old_a)
    assert store.blobs.has(old_b)  # relied upon now
    report = store.gc(grace_seconds=60)
    assert report.blobs_removed == 1
    assert not store.blobs.exists(old_a) and store.blobs.exists(old_b)
