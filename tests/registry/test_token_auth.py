"""Bearer token auth, as Docker Hub does it, against a token server written for the tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cloche.oci.reference import Reference
from cloche.registry.auth import Credentials
from cloche.registry.client import RegistryClient
from cloche.registry.errors import AuthError
from cloche.registry.pull import pull_blobs
from cloche.registry.push import push_manifest
from cloche.store.blobs import BlobStore
from tests.fixtures.services import Registry
from tests.registry.images import layer_from_files, make_image
from tests.registry.proxy import Proxy, TokenAuth

pytestmark = pytest.mark.registry


def test_anonymous_tokens_with_scopes(registry: Registry, make_proxy: Callable[..., Proxy],
                                      client: RegistryClient, src_blobs: BlobStore,
                                      dst_blobs: BlobStore) -> None:
    auth = TokenAuth()
    proxy = make_proxy(registry.host, token_auth=auth)
    img = make_image(src_blobs, [layer_from_files({"tok": b"en"})])
    push_manifest(f"{proxy.host}/tok/one:1", img.manifest_bytes, img.media_type, src_blobs,
                  client=client)
    assert "repository:tok/one:push" in {s for t in auth.tokens.values() for s in t}
    # mounting needs pull on the source repository too: one token covers both scopes
    res = push_manifest(f"{proxy.host}/tok/two:1", img.manifest_bytes, img.media_type,
                        src_blobs, client=client, mount_from=[f"{proxy.host}/tok/one"])
    assert res.mounted == 2
    assert "repository:tok/one:pull" in auth.issued and "repository:tok/two:pull,push" in auth.issued
    got = pull_blobs(Reference.parse(f"{proxy.host}/tok/two:1"), dst_blobs, client=client)
    assert got.descriptor.digest == img.digest
    # tokens are cached per scope, not fetched for every request
    assert len(auth.tokens) <= 5 < len(proxy.log), auth.issued
    assert all(status not in (401, 403) for _, _, status in proxy.log)


def test_token_with_credentials(registry: Registry, make_proxy: Callable[..., Proxy],
                                make_client: Callable[..., RegistryClient], src_blobs: BlobStore,
                                dst_blobs: BlobStore) -> None:
    auth = TokenAuth(user="alice", password="pw")
    proxy = make_proxy(registry.host, token_auth=auth)
    img = make_image(src_blobs, [layer_from_files({"a": b"b"})])
    ref = f"{proxy.host}/private/x:1"
    wrong = make_client(credentials=lambda host: Credentials("alice", "nope"))
    with pytest.raises(AuthError) as info:
        push_manifest(ref, img.manifest_bytes, img.media_type, src_blobs, client=wrong)
    assert info.value.status == 401 and "UNAUTHORIZED" in info.value.codes
    assert "bad credentials" in str(info.value) and "cloche login" in (info.value.hint or "")
    seen_hosts: list[str] = []

    def creds(host: str) -> Credentials:
        seen_hosts.append(host)
        return Credentials("alice", "pw")

    good = make_client(credentials=creds)
    push_manifest(ref, img.manifest_bytes, img.media_type, src_blobs, client=good)
    assert pull_blobs(Reference.parse(ref), dst_blobs, client=good).downloaded == 2
    assert set(seen_hosts) == {proxy.host}


def test_identity_token_uses_oauth_refresh(registry: Registry, make_proxy: Callable[..., Proxy],
                                           make_client: Callable[..., RegistryClient],
                                           src_blobs: BlobStore) -> None:
    auth = TokenAuth(user="alice", password="pw", refresh_token="refresh-123")
    proxy = make_proxy(registry.host, token_auth=auth)
    img = make_image(src_blobs, [layer_from_files({"o": b"auth"})])
    client = make_client(credentials=lambda host: Credentials(identity_token="refresh-123"))
    push_manifest(f"{proxy.host}/oauth/x:1", img.manifest_bytes, img.media_type, src_blobs,
                  client=client)
    assert "repository:oauth/x:pull,push" in auth.issued
    bad = make_client(credentials=lambda host: Credentials(identity_token="stale"))
    with pytest.raises(AuthError):
        push_manifest(f"{proxy.host}/oauth/y:1", img.manifest_bytes, img.media_type, src_blobs,
                      client=bad)


def test_login_checks_credentials_with_the_token_server(
        registry: Registry, make_proxy: Callable[..., Proxy], tmp_path) -> None:
    import json

    from cloche.registry.config import RegistryConfig
    from cloche.registry.login import login, logout
    proxy = make_proxy(registry.host, token_auth=TokenAuth(user="alice", password="pw"))
    cfg = tmp_path / "docker" / "config.json"
    with pytest.raises(AuthError, match="login to .* failed"):
        login(proxy.host, "alice", "wrong", config=RegistryConfig(), docker_config=cfg)
    assert not cfg.exists()
    assert login(f"http://{proxy.host}/", "alice", "pw", config=RegistryConfig(),
                 docker_config=cfg) == cfg
    assert proxy.host in json.loads(cfg.read_text())["auths"]
    assert logout(proxy.host, docker_config=cfg) is True
    assert logout(proxy.host, docker_config=cfg) is False
