"""A registry that fails: transient errors are retried, wrong bytes are never stored.

A fault-injecting proxy (tests/registry/proxy.py) stands in front of the real docker-registry.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from cloche.errors import RegistryError
from cloche.oci.digest import DigestMismatchError
from cloche.oci.reference import Reference
from cloche.registry.client import RegistryClient
from cloche.registry.errors import BlobVerificationError
from cloche.registry.pull import pull_blobs
from cloche.registry.push import push_manifest
from cloche.store.blobs import BlobStore
from tests.fixtures.services import Registry
from tests.registry.images import BuiltImage, layer_from_files, make_image
from tests.registry.proxy import Proxy

pytestmark = pytest.mark.registry


@pytest.fixture
def pushed(registry: Registry, client: RegistryClient, src_blobs: BlobStore) -> BuiltImage:
    img = make_image(src_blobs, [layer_from_files({"data": os.urandom(100_000)}),
                                 layer_from_files({"small": b"s"})])
    push_manifest(f"{registry.host}/hostile/app:1", img.manifest_bytes, img.media_type,
                  src_blobs, client=client)
    return img


@pytest.fixture
def proxy(registry: Registry, make_proxy: Callable[..., Proxy]) -> Proxy:
    return make_proxy(registry.host)


def _stored(blobs: BlobStore) -> set[str]:
    return {str(d) for d in blobs.digests()}


def test_wrong_bytes_are_rejected_and_not_stored(pushed: BuiltImage, proxy: Proxy,
                                                 client: RegistryClient, dst_blobs: BlobStore) -> None:
    layer = pushed.layer_digests[0]
    proxy.add("GET", f"/blobs/{layer}", "wrong", times=100)
    with pytest.raises(BlobVerificationError) as info:
        pull_blobs(Reference.parse(f"{proxy.host}/hostile/app:1"), dst_blobs, client=client)
    assert isinstance(info.value, DigestMismatchError)
    assert info.value.expected == layer and "refusing" in str(info.value)
    assert str(layer) in str(info.value) and proxy.host in str(info.value)
    assert not dst_blobs.has(layer)
    assert not dst_blobs.has(pushed.digest)            # no manifest for a partial image
    assert not any(dst_blobs.tmp_dir.iterdir())        # no temporary file left behind


def test_wrong_manifest_bytes_are_rejected(pushed: BuiltImage, proxy: Proxy,
                                           client: RegistryClient, dst_blobs: BlobStore) -> None:
    proxy.add("GET", f"/manifests/{pushed.digest}", "wrong")
    with pytest.raises(DigestMismatchError):
        pull_blobs(Reference.parse(f"{proxy.host}/hostile/app@{pushed.digest}"), dst_blobs,
                   client=client)
    assert _stored(dst_blobs) == set()


def test_truncated_blob_resumes_with_range(pushed: BuiltImage, proxy: Proxy,
                                           client: RegistryClient, dst_blobs: BlobStore,
                                           src_blobs: BlobStore) -> None:
    layer = pushed.layer_digests[0]
    proxy.add("GET", f"/blobs/{layer}", "truncate", times=2)
    result = pull_blobs(Reference.parse(f"{proxy.host}/hostile/app:1"), dst_blobs, client=client)
    assert result.descriptor.digest == pushed.digest
    assert dst_blobs.read_bytes(layer) == src_blobs.read_bytes(layer)
    gets = [p for m, p, s in proxy.log if m == "GET" and str(layer) in p]
    assert len(gets) == 3       # two cut short, one resumed; each continued where the last stopped


def test_resume_when_the_server_ignores_range(pushed: BuiltImage, proxy: Proxy,
                                              client: RegistryClient, dst_blobs: BlobStore,
                                              src_blobs: BlobStore) -> None:
    layer = pushed.layer_digests[0]
    proxy.add("GET", f"/blobs/{layer}", "truncate")
    proxy.add("GET", f"/blobs/{layer}", "ignore-range")   # answers 200 with the whole blob
    pull_blobs(Reference.parse(f"{proxy.host}/hostile/app:1"), dst_blobs, client=client)
    assert dst_blobs.read_bytes(layer) == src_blobs.read_bytes(layer)


def test_500_429_and_drops_are_retried(pushed: BuiltImage, proxy: Proxy, client: RegistryClient,
                                       dst_blobs: BlobStore) -> None:
    proxy.add("GET", "/manifests/1", "500", times=2)
    proxy.add("GET", f"/blobs/{pushed.config_digest}", "429")
    proxy.add("GET", f"/blobs/{pushed.layer_digests[1]}", "drop")
    result = pull_blobs(Reference.parse(f"{proxy.host}/hostile/app:1"), dst_blobs, client=client)
    assert result.downloaded == 3
    assert [s for m, p, s in proxy.log if p.endswith("/manifests/1")] == [200]
    assert all(f.fired == f.times for f in proxy.faults)


def test_retries_are_bounded(pushed: BuiltImage, proxy: Proxy,
                             make_client: Callable[..., RegistryClient], dst_blobs: BlobStore) -> None:
    client = make_client(retries=2)
    proxy.add("GET", "/manifests/1", "500", times=10)
    with pytest.raises(RegistryError) as info:
        pull_blobs(Reference.parse(f"{proxy.host}/hostile/app:1"), dst_blobs, client=client)
    assert info.value.status == 500 and info.value.retryable
    assert "UNAVAILABLE" in info.value.codes
    assert proxy.faults[0].fired == 3       # the first try and two retries


def test_push_survives_transient_errors(registry: Registry, proxy: Proxy, client: RegistryClient,
                                        src_blobs: BlobStore, dst_blobs: BlobStore) -> None:
    img = make_image(src_blobs, [layer_from_files({"p": os.urandom(10_000)})])
    proxy.add("POST", "/blobs/uploads/", "500")
    proxy.add("PUT", "/blobs/uploads/", "500")
    proxy.add("PUT", "/manifests/", "429")
    push_manifest(f"{proxy.host}/hostile/pushed:1", img.manifest_bytes, img.media_type,
                  src_blobs, client=client)
    got = pull_blobs(Reference.parse(f"{registry.host}/hostile/pushed:1"), dst_blobs,
                     client=client)
    assert got.descriptor.digest == img.digest
