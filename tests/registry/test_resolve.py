"""Resolving an image by its manifest and config only, then finishing its pull (issue 12).

``resolve_image`` is what a build with --cache-from asks of a base image it may never need the
files of; ``pull_resolved`` fetches the rest when it does, without asking for the manifest
again. A proxy in front of the real docker-registry logs the requests and serves wrong bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cloche.events import Event, LayerExists, LayerPulled
from cloche.oci import mediatypes as mt
from cloche.oci.platform import Platform
from cloche.registry.client import RegistryClient
from cloche.registry.errors import BlobVerificationError
from cloche.registry.pull import pull_resolved, resolve_image
from cloche.registry.push import push_manifest
from cloche.store import Store
from cloche.store.blobs import BlobStore
from tests.fixtures.services import Registry
from tests.registry.images import BuiltImage, layer_from_files, make_image, make_index
from tests.registry.proxy import Proxy

pytestmark = pytest.mark.registry


@pytest.fixture
def pushed(registry: Registry, client: RegistryClient, src_blobs: BlobStore
           ) -> dict[str, BuiltImage]:
    """A two-platform index: each image one big random layer and a small one."""
    images = {p: make_image(src_blobs, [layer_from_files({"big": os.urandom(300_000)}),
                                        layer_from_files({"arch": p.encode()})],
                            arch=p.split("/")[1], label=p)
              for p in ("linux/amd64", "linux/arm64")}
    for img in images.values():
        push_manifest(f"{registry.host}/lazy/sdk@{img.digest}", img.manifest_bytes,
                      img.media_type, src_blobs, client=client)
    data, _ = make_index(src_blobs, images)
    push_manifest(f"{registry.host}/lazy/sdk:1", data, mt.OCI_INDEX, src_blobs, client=client)
    return images


def _gets(proxy: Proxy) -> list[str]:
    return [path.split("/v2/lazy/sdk/", 1)[1] for method, path, _ in proxy.log
            if method == "GET" and "/v2/lazy/sdk/" in path]


def test_resolve_reads_manifest_and_config_then_the_pull_reads_only_layers(
        pushed: dict[str, BuiltImage], registry: Registry, make_proxy: Callable[..., Proxy],
        client: RegistryClient, src_blobs: BlobStore, tmp_path: Path) -> None:
    proxy = make_proxy(registry.host)
    ref = f"{proxy.host}/lazy/sdk:1"
    arm = pushed["linux/arm64"]
    resolved = resolve_image(ref, Platform.parse("linux/arm64"), client=client)
    assert resolved.fetched.digest == arm.digest
    assert resolved.config == src_blobs.read_bytes(arm.config_digest)
    assert [str(d.digest) for d in resolved.manifest.layers] == [str(d) for d in
                                                                 arm.layer_digests]
    assert sorted(_gets(proxy)) == sorted(["manifests/1", f"manifests/{arm.digest}",
                                           f"blobs/{arm.config_digest}"])

    proxy.log.clear()
    store = Store.open(tmp_path / "store")
    seen: list[Event] = []
    image = pull_resolved(resolved, store, client=client, listener=seen.append)
    assert image.digest == arm.digest and store.image(f"{proxy.host}/lazy/sdk:1",
                                                      "linux/arm64").digest == arm.digest
    # the manifest is not asked for again, nor the config (it came with the resolution)
    assert sorted(_gets(proxy)) == sorted(f"blobs/{d}" for d in arm.layer_digests)
    assert {e.descriptor.digest for e in seen if isinstance(e, LayerPulled)} == \
        set(arm.layer_digests)
    assert [e.descriptor.digest for e in seen if isinstance(e, LayerExists)] == \
        [arm.config_digest]


def test_a_config_with_other_bytes_is_refused(
        pushed: dict[str, BuiltImage], registry: Registry, make_proxy: Callable[..., Proxy],
        client: RegistryClient) -> None:
    proxy = make_proxy(registry.host)
    amd = pushed["linux/amd64"]
    proxy.add("GET", f"/blobs/{amd.config_digest}", "wrong", times=100)
    with pytest.raises(BlobVerificationError):
        resolve_image(f"{proxy.host}/lazy/sdk:1", "linux/amd64", client=client)
