"""Push and pull through Debian's real docker-registry on loopback."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest

from cloche.errors import ClocheError
from cloche.events import Event, LayerExists, LayerPulled, LayerPulling, LayerPushed, ManifestPushed
from cloche.oci.platform import Platform
from cloche.oci.reference import Reference
from cloche.registry.client import RegistryClient
from cloche.registry.config import RegistryConfig
from cloche.registry.errors import AuthError, NotFoundError
from cloche.registry.pull import pull_blobs
from cloche.registry.push import push_manifest
from cloche.store.blobs import BlobStore
from tests.fixtures.services import Registry
from tests.registry.images import layer_from_files, make_image, make_index
from tests.registry.proxy import Proxy

pytestmark = pytest.mark.registry


def _events() -> tuple[list[Event], Callable[[Event], None]]:
    seen: list[Event] = []
    return seen, seen.append


def test_push_then_pull_round_trip(registry: Registry, client: RegistryClient,
                                   src_blobs: BlobStore, dst_blobs: BlobStore) -> None:
    img = make_image(src_blobs, [layer_from_files({"etc/hello": b"hello"}),
                                 layer_from_files({"big": os.urandom(200_000)})])
    ref = Reference.parse(f"{registry.host}/rt/app:v1")
    pushed = push_manifest(ref, img.manifest_bytes, img.media_type, src_blobs, client=client)
    assert pushed.digest == img.digest and pushed.uploaded == 3
    # a second push finds every blob in place and uploads nothing
    seen, listener = _events()
    again = push_manifest(ref, img.manifest_bytes, img.media_type, src_blobs, client=client,
                          listener=listener)
    assert (again.uploaded, again.skipped) == (0, 3)
    assert sorted(e.how for e in seen if isinstance(e, LayerPushed)) == ["exists"] * 3
    assert [e.descriptor.digest for e in seen if isinstance(e, ManifestPushed)] == [img.digest]

    seen, listener = _events()
    result = pull_blobs(ref, dst_blobs, client=client, listener=listener)
    assert result.descriptor.digest == img.digest and result.downloaded == 3
    for d in (img.digest, img.config_digest, *img.layer_digests):
        assert dst_blobs.read_bytes(d) == src_blobs.read_bytes(d)
    blobs = {img.config_digest, *img.layer_digests}
    assert {e.descriptor.digest for e in seen if isinstance(e, LayerPulled)} == blobs
    assert {e.descriptor.digest for e in seen if isinstance(e, LayerPulling)} == blobs
    assert all(e.reference == str(ref) for e in seen if isinstance(e, LayerPulled))
    # pulling again downloads nothing: blobs already present are skipped, and said so
    seen.clear()
    assert pull_blobs(ref, dst_blobs, client=client, listener=listener).downloaded == 0
    assert {type(e) for e in seen} == {LayerExists}
    assert {e.descriptor.digest for e in seen if isinstance(e, LayerExists)} == blobs
    # by digest too
    by_digest = pull_blobs(Reference.parse(f"{registry.host}/rt/app@{img.digest}"), dst_blobs,
                           client=client)
    assert by_digest.descriptor.digest == img.digest


def test_chunked_upload_and_cross_repo_mount(registry: Registry, make_client: Callable[..., RegistryClient],
                                            src_blobs: BlobStore, dst_blobs: BlobStore,
                                            make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy(registry.host)           # only watches the requests
    client = make_client(chunked_threshold=50_000, chunk_size=32_768)
    big = layer_from_files({"random": os.urandom(300_000)})
    img = make_image(src_blobs, [big], docker=True)
    pushed = push_manifest(f"{proxy.host}/chunk/one:latest", img.manifest_bytes,
                           img.media_type, src_blobs, client=client)
    assert pushed.uploaded == 2
    patches = [p for m, p, s in proxy.log if m == "PATCH"]
    assert len(patches) == -(-len(big) // 32_768)   # the big layer went in 32 KiB chunks
    puts = [p for m, p, s in proxy.log if m == "PUT" and "digest=" in p]
    assert len(puts) == 2                           # config: one monolithic PUT; layer: closing PUT
    seen, listener = _events()
    mounted = push_manifest(f"{proxy.host}/chunk/two:latest", img.manifest_bytes,
                            img.media_type, src_blobs, client=client,
                            mount_from=[f"{proxy.host}/chunk/one"], listener=listener)
    assert (mounted.mounted, mounted.uploaded) == (2, 0)
    assert sorted(e.how for e in seen if isinstance(e, LayerPushed)) == ["mounted"] * 2
    assert any("mount=" in p and s == 201 for m, p, s in proxy.log if m == "POST")
    got = pull_blobs(Reference.parse(f"{registry.host}/chunk/two"), dst_blobs, client=client)
    assert dst_blobs.read_bytes(img.layer_digests[0]) == big
    assert got.manifest.media_type == img.media_type


def test_index_platform_selection(registry: Registry, client: RegistryClient,
                                  src_blobs: BlobStore, tmp_path) -> None:
    amd = make_image(src_blobs, [layer_from_files({"arch": b"amd64"})], arch="amd64", label="amd")
    arm = make_image(src_blobs, [layer_from_files({"arch": b"arm64"})], arch="arm64", label="arm")
    data, digest = make_index(src_blobs, {"linux/amd64": amd, "linux/arm64/v8": arm})
    ref = f"{registry.host}/multi/app:1"
    push_manifest(ref, data, None, src_blobs, client=client)
    for plat, img in (("linux/arm64", arm), ("linux/amd64", amd)):
        blobs = BlobStore(tmp_path / plat.replace("/", "-"))
        res = pull_blobs(Reference.parse(ref), blobs, platform=Platform.parse(plat), client=client)
        assert res.descriptor.digest == img.digest and res.index_digest == digest
        assert blobs.has(digest) and blobs.has(img.layer_digests[0])
        other = arm if img is amd else amd
        assert not blobs.has(other.layer_digests[0])
    from cloche.oci.errors import PlatformNotFoundError
    with pytest.raises(PlatformNotFoundError):
        pull_blobs(Reference.parse(ref), BlobStore(tmp_path / "s390"),
                   platform=Platform.parse("linux/s390x"), client=client)


def test_tags_and_missing(registry: Registry, client: RegistryClient, src_blobs: BlobStore,
                          dst_blobs: BlobStore) -> None:
    img = make_image(src_blobs, [layer_from_files({"t": b"t"})])
    for tag in ("a", "b", "c"):
        push_manifest(f"{registry.host}/tags/app:{tag}", img.manifest_bytes, img.media_type,
                      src_blobs, client=client)
    ep = client.config.push_endpoints(Reference.parse(f"{registry.host}/tags/app"))[0]
    assert sorted(client.list_tags(ep)) == ["a", "b", "c"]
    assert sorted(client.list_tags(ep, page_size=1)) == ["a", "b", "c"]   # Link pagination
    with pytest.raises(NotFoundError) as info:
        pull_blobs(Reference.parse(f"{registry.host}/tags/app:nope"), dst_blobs, client=client)
    assert info.value.status == 404 and "MANIFEST_UNKNOWN" in info.value.codes
    assert not info.value.retryable and "tags/app:nope" in str(info.value)


def test_basic_auth_registry(auth_registry: Registry, make_client: Callable[..., RegistryClient],
                             src_blobs: BlobStore, dst_blobs: BlobStore, tmp_path) -> None:
    from cloche.registry.auth import Credentials
    img = make_image(src_blobs, [layer_from_files({"s": b"secret"})])
    ref = f"{auth_registry.host}/private/app:1"
    anonymous = make_client()
    with pytest.raises(AuthError) as info:
        push_manifest(ref, img.manifest_bytes, img.media_type, src_blobs, client=anonymous)
    assert info.value.status == 401 and "cloche login" in (info.value.hint or "")
    wrong = make_client(credentials=lambda h: Credentials("tester", "wrong"))
    with pytest.raises(AuthError) as info:
        push_manifest(ref, img.manifest_bytes, img.media_type, src_blobs, client=wrong)
    assert info.value.status == 401
    good = make_client(credentials=lambda h: Credentials(auth_registry.username or "",
                                                         auth_registry.password or ""))
    push_manifest(ref, img.manifest_bytes, img.media_type, src_blobs, client=good)
    assert pull_blobs(Reference.parse(ref), dst_blobs, client=good).descriptor.digest == img.digest
    # the same credentials read from a Docker config.json
    cfg = tmp_path / "config.json"
    import base64
    cfg.write_text(json.dumps({"auths": {auth_registry.host: {"auth": base64.b64encode(
        f"{auth_registry.username}:{auth_registry.password}".encode()).decode()}}}))
    from_file = RegistryClient(RegistryConfig(), docker_config=cfg, backoff=0.01)
    try:
        assert pull_blobs(Reference.parse(ref), BlobStore(tmp_path / "s3"),
                          client=from_file).downloaded == 2
    finally:
        from_file.close()


def test_insecure_registry_falls_back_from_https_to_http(
        registry: Registry, make_client: Callable[..., RegistryClient], src_blobs: BlobStore,
        dst_blobs: BlobStore, tmp_path, make_proxy: Callable[..., Proxy]) -> None:
    """``insecure = true`` (Docker's insecure-registries): HTTPS without verification first,
    then plain HTTP; this registry only speaks HTTP."""
    path = tmp_path / "config.toml"
    path.write_text(f'[registry."{registry.host}"]\nhttp = false\ninsecure = true\n')
    cfg = RegistryConfig.load(path)
    client = make_client(cfg, retries=0)
    img = make_image(src_blobs, [layer_from_files({"i": b"insecure"})])
    push_manifest(f"{registry.host}/insecure/app:1", img.manifest_bytes, img.media_type,
                  src_blobs, client=client)
    got = pull_blobs(Reference.parse(f"{registry.host}/insecure/app:1"), dst_blobs, client=client)
    assert got.source.registry == registry.host
    # without insecure, HTTPS is required: the plain-HTTP registry is never spoken to in HTTP
    watcher = make_proxy(registry.host)
    strict = tmp_path / "strict.toml"
    strict.write_text(f'[registry."{watcher.host}"]\nhttp = false\n')
    with pytest.raises(ClocheError):
        pull_blobs(Reference.parse(f"{watcher.host}/insecure/app:1"), dst_blobs,
                   client=make_client(RegistryConfig.load(strict), retries=0))
    assert watcher.log == []


def test_transport_is_swappable(registry: Registry, make_client: Callable[..., RegistryClient],
                                src_blobs: BlobStore, dst_blobs: BlobStore) -> None:
    """All I/O goes through the transport given: here a real one that records what it sends."""
    import httpx

    sent: list[str] = []

    class Recording(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            sent.append(f"{request.method} {request.url.path}")
            return super().handle_request(request)

    client = make_client(transport=Recording(verify=False))   # plain HTTP: no CA bundle needed
    img = make_image(src_blobs, [layer_from_files({"tr": b"ansport"})])
    push_manifest(f"{registry.host}/transport/app:1", img.manifest_bytes, img.media_type,
                  src_blobs, client=client)
    pull_blobs(Reference.parse(f"{registry.host}/transport/app:1"), dst_blobs, client=client)
    assert "PUT /v2/transport/app/manifests/1" in sent
    assert f"GET /v2/transport/app/blobs/{img.layer_digests[0]}" in sent
