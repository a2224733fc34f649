"""Fixtures of the registry tests: clients with fast retries, blob stores, proxies."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloche.registry.client import RegistryClient
from cloche.registry.config import RegistryConfig
from cloche.store.blobs import BlobStore
from tests.registry.proxy import Proxy


@pytest.fixture
def make_client() -> Iterator[Callable[..., RegistryClient]]:
    made: list[RegistryClient] = []

    def make(config: RegistryConfig | None = None, **kw: object) -> RegistryClient:
        kw.setdefault("backoff", 0.01)
        kw.setdefault("credentials", lambda host: None)
        client = RegistryClient(config or RegistryConfig(), **kw)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for c in made:
        c.close()


@pytest.fixture
def client(make_client: Callable[..., RegistryClient]) -> RegistryClient:
    return make_client()


@pytest.fixture
def src_blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "src-store")


@pytest.fixture
def dst_blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "dst-store")


@pytest.fixture
def make_proxy() -> Iterator[Callable[..., Proxy]]:
    made: list[Proxy] = []

    def make(upstream: str, **kw: object) -> Proxy:
        p = Proxy(upstream, **kw)  # type: ignore[arg-type]
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()
