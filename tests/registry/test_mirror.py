"""Mirrors: the same repository path on another host, and falling back to the registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cloche.oci.reference import Reference
from cloche.registry.client import RegistryClient
from cloche.registry.config import RegistryConfig
from cloche.registry.pull import pull_blobs
from cloche.registry.push import push_manifest
from cloche.store.blobs import BlobStore
from tests.fixtures.services import Registry, _stop, free_port, start_registry
from tests.registry.images import layer_from_files, make_image
from tests.registry.proxy import Proxy

pytestmark = pytest.mark.registry


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory):
    reg, proc = start_registry(tmp_path_factory.mktemp("mirror"))
    yield reg
    _stop(proc)


def _config(tmp_path: Path, upstream: str, mirrors: list[str]) -> RegistryConfig:
    path = tmp_path / "config.toml"
    quoted = ", ".join(f'"{m}"' for m in mirrors)
    path.write_text(f'[registry."{upstream}"]\nmirrors = [{quoted}]\n')
    return RegistryConfig.load(path)


def test_mirror_serves_then_registry_is_the_fallback(
        registry: Registry, mirror: Registry, make_proxy: Callable[..., Proxy],
        make_client: Callable[..., RegistryClient], src_blobs: BlobStore, tmp_path: Path) -> None:
    upstream = make_proxy(registry.host)        # counts what reaches the registry itself
    plain = make_client()
    on_mirror = make_image(src_blobs, [layer_from_files({"from": b"mirror"})], label="m")
    on_upstream = make_image(src_blobs, [layer_from_files({"from": b"upstream"})], label="u")
    push_manifest(f"{mirror.host}/library/golang:1.21", on_mirror.manifest_bytes,
                  on_mirror.media_type, src_blobs, client=plain)
    push_manifest(f"{registry.host}/library/golang:1.22", on_upstream.manifest_bytes,
                  on_upstream.media_type, src_blobs, client=plain)
    dead = f"127.0.0.1:{free_port()}"           # a mirror that does not answer at all
    client = make_client(_config(tmp_path, upstream.host, [dead, mirror.host]), retries=0)

    got = pull_blobs(Reference.parse(f"{upstream.host}/library/golang:1.21"),
                     BlobStore(tmp_path / "a"), client=client)
    assert got.descriptor.digest == on_mirror.digest
    assert got.source.registry == mirror.host and got.source.repository == "library/golang"
    assert upstream.log == []                   # the mirror had it: the registry was not asked

    got = pull_blobs(Reference.parse(f"{upstream.host}/library/golang:1.22"),
                     BlobStore(tmp_path / "b"), client=client)
    assert got.descriptor.digest == on_upstream.digest
    assert got.source.registry == upstream.host
    assert any("/manifests/1.22" in p for _, p, _ in upstream.log)


def test_failing_mirror_falls_back(registry: Registry, make_proxy: Callable[..., Proxy],
                                   make_client: Callable[..., RegistryClient],
                                   src_blobs: BlobStore, tmp_path: Path) -> None:
    img = make_image(src_blobs, [layer_from_files({"x": b"y"})])
    push_manifest(f"{registry.host}/distroless/static:1", img.manifest_bytes, img.media_type,
                  src_blobs, client=make_client())
    broken = make_proxy(registry.host)
    broken.add("GET", "/manifests/", "500", times=100)
    client = make_client(_config(tmp_path, registry.host, [broken.host]), retries=1)
    got = pull_blobs(Reference.parse(f"{registry.host}/distroless/static:1"),
                     BlobStore(tmp_path / "c"), client=client)
    assert got.descriptor.digest == img.digest and got.source.registry == registry.host
    assert broken.faults[0].fired == 2


def test_mirror_serving_wrong_bytes_falls_back_and_stores_nothing_wrong(
        registry: Registry, make_proxy: Callable[..., Proxy],
        make_client: Callable[..., RegistryClient], src_blobs: BlobStore, tmp_path: Path) -> None:
    img = make_image(src_blobs, [layer_from_files({"w": b"wrong"})])
    push_manifest(f"{registry.host}/mirrored/app:1", img.manifest_bytes, img.media_type,
                  src_blobs, client=make_client())
    liar = make_proxy(registry.host)
    liar.add("GET", f"/blobs/{img.layer_digests[0]}", "wrong", times=100)
    client = make_client(_config(tmp_path, registry.host, [liar.host]))
    dst = BlobStore(tmp_path / "d")
    got = pull_blobs(Reference.parse(f"{registry.host}/mirrored/app:1"), dst, client=client)
    assert got.source.registry == registry.host and liar.faults[0].fired == 1
    dst.check(img.layer_digests[0])             # what is stored is the right bytes
