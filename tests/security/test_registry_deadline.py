"""Item 22 of issue 9: a registry that trickles its answers cannot hold a pull for ever.

A registry on loopback (a thread here) answers every request, but sends its bytes one at a
time, a second apart: a manifest's body, a blob's body, or the answer's headers themselves.
httpx's read timeout (60 s) never trips on that; before the fix the pull waited for ever
(pytest-timeout ends the test). With ``CLOCHE_REGISTRY_TIMEOUT=2`` each case now fails within
seconds, naming the registry; a blob that keeps coming at a decent rate is not cut off.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cloche.errors import ClocheError
from cloche.oci import mediatypes as mt
from cloche.oci.reference import Reference
from cloche.registry.client import RegistryClient
from cloche.registry.config import RegistryConfig
from cloche.registry.pull import pull_blobs
from cloche.store.blobs import BlobStore
from tests.engine.conftest import Builder

pytestmark = pytest.mark.timeout(90)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class SlowRegistry:
    """Serves one image (tag ``slow/app:1``); ``mode`` says which answer trickles:
    ``manifest`` (its body), ``blob`` (the layer's body), ``headers`` (the manifest's
    headers), ``steady`` (the layer at about 256 KiB/s) or ``none``."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        # steady: 512 KiB in about 1.6 s; the others, a small layer
        layer = bytes(range(256)) * 2048 if mode == "steady" else b"layer bytes" * 100
        self.config = json.dumps({"architecture": "amd64", "os": "linux",
                                  "rootfs": {"type": "layers",
                                             "diff_ids": [_digest(layer)]}}).encode()
        self.layer = layer
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": _digest(self.config),
                       "size": len(self.config)},
            "layers": [{"mediaType": mt.OCI_LAYER_TAR, "digest": _digest(layer),
                        "size": len(layer)}]}).encode()
        self.stop = threading.Event()
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                registry.answer(self)

            do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()

    def _trickle(self, h: BaseHTTPRequestHandler, data: bytes, *, every: float = 1.0,
                 piece: int = 1) -> None:
        for i in range(0, len(data), piece):
            if self.stop.is_set():
                return
            try:
                h.wfile.write(data[i:i + piece])
                h.wfile.flush()
            except OSError:
                return  # the client hung up
            time.sleep(every)

    def answer(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path
        if path == "/v2/":
            body, kind = b"{}", "application/json"
        elif "/manifests/" in path:
            body, kind = self.manifest, mt.OCI_MANIFEST
        elif path.endswith(_digest(self.config)):
            body, kind = self.config, "application/octet-stream"
        elif path.endswith(_digest(self.layer)):
            body, kind = self.layer, "application/octet-stream"
        else:
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                f"Docker-Content-Digest: {_digest(body)}\r\n\r\n").encode()
        manifest = "/manifests/" in path
        if self.mode == "headers" and manifest:
            return self._trickle(h, head + body)
        h.wfile.write(head)
        if h.command == "HEAD":
            return
        if (self.mode == "manifest" and manifest) or (
                self.mode == "blob" and path.endswith(_digest(self.layer))):
            return self._trickle(h, body)
        if self.mode == "steady" and path.endswith(_digest(self.layer)):
            return self._trickle(h, body, every=0.05, piece=16 << 10)  # ~320 KiB/s
        h.wfile.write(body)


@pytest.fixture
def slow(request: pytest.FixtureRequest) -> Iterator[SlowRegistry]:
    registry = SlowRegistry(request.param)
    yield registry
    registry.close()


def _client() -> RegistryClient:
    return RegistryClient(RegistryConfig(), credentials=lambda host: None, backoff=0.01)


@pytest.mark.parametrize("slow", ["manifest", "blob", "headers"], indirect=True)
def test_a_trickling_registry_fails_the_pull_in_time(slow: SlowRegistry, tmp_path: object,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOCHE_REGISTRY_TIMEOUT", "2")
    blobs = BlobStore(tmp_path / "store")  # type: ignore[operator]
    start = time.monotonic()
    with _client() as client, pytest.raises(ClocheError) as info:
        pull_blobs(Reference.parse(f"{slow.host}/slow/app:1"), blobs, client=client)
    elapsed = time.monotonic() - start
    assert elapsed < 20, elapsed
    assert slow.host in str(info.value) and "CLOCHE_REGISTRY_TIMEOUT" in str(info.value)


@pytest.mark.parametrize("slow", ["steady"], indirect=True)
def test_a_blob_that_keeps_coming_is_not_cut_off(slow: SlowRegistry, tmp_path: object,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOCHE_REGISTRY_TIMEOUT", "1")
    blobs = BlobStore(tmp_path / "store")  # type: ignore[operator]
    with _client() as client:
        result = pull_blobs(Reference.parse(f"{slow.host}/slow/app:1"), blobs, client=client)
    assert result.downloaded == 2


@pytest.mark.parametrize("slow", ["blob"], indirect=True)
def test_a_build_from_a_trickling_registry_fails_in_time(slow: SlowRegistry, builder: Builder,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOCHE_REGISTRY_TIMEOUT", "2")
    start = time.monotonic()
    with pytest.raises(ClocheError) as info:
        builder.build(f"FROM {slow.host}/slow/app:1\nLABEL x=1\n")
    assert time.monotonic() - start < 30
    assert slow.host in str(info.value) and getattr(info.value, "line", None) == 1
