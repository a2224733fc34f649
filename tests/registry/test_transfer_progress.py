"""Issue 14: pulls and pushes report their bytes (``BlobProgress``), throttled, and ``cloche
pull``/``cloche push`` print them as lines when stderr is no terminal. Through Debian's real
docker-registry on loopback, with a layer of 5 MB of random bytes (gzip keeps its size)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cloche import events as ev
from cloche.oci.descriptor import Descriptor
from cloche.oci.digest import Digest
from cloche.oci.reference import Reference
from cloche.registry.client import RegistryClient
from cloche.registry.pull import pull_blobs
from cloche.registry.push import push_manifest
from cloche.store.blobs import BlobStore
from tests.engine.conftest import Recorder
from tests.fixtures.services import Registry
from tests.registry.images import BuiltImage, layer_from_files, make_image
from tests.registry.proxy import Proxy
from tests.registry.test_interop import cloche

pytestmark = pytest.mark.registry

SIZE = 5 << 20


class Seen(Recorder):
    """Every event, from the transfer threads."""

    def progress(self, digest: Digest, action: str) -> list[ev.BlobProgress]:
        return [e for e in self.of(ev.BlobProgress)
                if e.descriptor.digest == digest and e.action == action]


def _big_image(blobs: BlobStore) -> tuple[BuiltImage, Digest]:
    img = make_image(blobs, [layer_from_files({"big": os.urandom(SIZE)})])
    return img, img.layer_digests[0]


def _check_grows(events: list[ev.BlobProgress], size: int, bound: float = 50) -> None:
    assert events, "no BlobProgress"
    done = [e.done for e in events]
    assert done == sorted(done) and done[-1] == size  # grows to the total, ends there
    assert [e.done == e.total for e in events].count(True) == 1  # one final event, the last
    assert all(e.total == size for e in events)
    assert len({e.started for e in events}) == 1
    assert len(events) < bound  # the throttle: 0.1 s between events (loopback takes far less)


def test_push_and_pull_report_blob_bytes(registry: Registry, client: RegistryClient,
                                         src_blobs: BlobStore, dst_blobs: BlobStore) -> None:
    img, layer = _big_image(src_blobs)
    size = src_blobs.size(layer)
    ref = Reference.parse(f"{registry.host}/progress/lib:1")
    pushed = Seen()
    push_manifest(ref, img.manifest_bytes, img.media_type, src_blobs, client=client,
                  listener=pushed)
    ups = pushed.progress(layer, "pushing")
    _check_grows(ups, size)
    assert all(e.reference == str(ref) for e in ups)
    assert pushed.progress(img.config_digest, "pushing")[-1].done == \
        src_blobs.size(img.config_digest)
    # the final event comes before the blob is said to be pushed
    kinds = [type(e) for e in pushed.events if getattr(e, "descriptor", None) is not None
             and e.descriptor.digest == layer]  # type: ignore[attr-defined]
    assert kinds[-2:] == [ev.BlobProgress, ev.LayerPushed]

    pulled = Seen()
    pull_blobs(ref, dst_blobs, client=client, listener=pulled)
    downs = pulled.progress(layer, "pulling")
    _check_grows(downs, size)
    kinds = [type(e) for e in pulled.events if getattr(e, "descriptor", None) is not None
             and e.descriptor.digest == layer]  # type: ignore[attr-defined]
    assert kinds[0] is ev.LayerPulling and kinds[-2:] == [ev.BlobProgress, ev.LayerPulled]

    # a blob already there moves no bytes: no BlobProgress
    again = Seen()
    push_manifest(ref, img.manifest_bytes, img.media_type, src_blobs, client=client,
                  listener=again)
    assert not [e for e in again.events if isinstance(e, ev.BlobProgress)]


def test_the_meter_throttles_a_long_transfer() -> None:
    """BlobMeter: the first count at once, then at most one event per 0.1 s however many
    chunks arrive, and one final event with done == total."""
    seen = Seen()
    total = 400_000
    desc = Descriptor("application/octet-stream", Digest.from_bytes(b"x"), total)
    meter = ev.BlobMeter(seen, "r", desc, "pulling")
    started = time.monotonic()
    for _ in range(total // 100):  # 4000 small chunks over about 0.4 s
        meter.add(100)
        time.sleep(0.0001)
    meter.finish()
    meter.finish()  # once only
    elapsed = time.monotonic() - started
    events = seen.progress(desc.digest, "pulling")
    assert events[0].done == 100 and events[-1].done == total == events[-1].total
    assert len(events) <= elapsed / ev.BlobMeter.INTERVAL + 2
    assert [e.done == total for e in events].count(True) == 1


def _lines(stderr: str, short: str, verb: str) -> tuple[list[str], list[str]]:
    """Byte lines of one layer: (in progress, done)."""
    pattern = re.compile(rf"^{short}: {verb} [0-9.]+[kMG]?B / 5\.2[0-9]MB( [0-9.]+s)?( done)?$")
    lines = [line for line in stderr.splitlines() if pattern.match(line)]
    return [x for x in lines if not x.endswith(" done")], [x for x in lines if x.endswith(" done")]


def test_cli_pull_and_push_print_byte_lines(registry: Registry, client: RegistryClient,
                                            src_blobs: BlobStore, tmp_path: Path) -> None:
    img, layer = _big_image(src_blobs)
    name = f"{registry.host}/progress/cli:1"
    push_manifest(name, img.manifest_bytes, img.media_type, src_blobs, client=client)
    root = tmp_path / "store"
    pulled = cloche("pull", name, "--root", str(root))
    moving, done = _lines(pulled.stderr, layer.short, "Downloading")
    assert moving and len(done) == 1, pulled.stderr
    assert done[0].startswith(f"{layer.short}: Downloading 5.24MB / 5.24MB")
    assert len(moving) < 10  # at most one line a second per blob (plus its first)
    lines = pulled.stderr.splitlines()
    assert lines.index(done[0]) < lines.index(f"{layer.short}: Pull complete")
    assert "Downloading" not in cloche("pull", "-q", name, "--root", str(root)).stderr

    # another registry name for the same registry: nothing to mount, every byte goes up
    port = registry.host.rsplit(":", 1)[1]
    target = f"localhost:{port}/progress/copy:1"
    pushed = cloche("push", name, target, "--root", str(root))
    moving, done = _lines(pushed.stderr, layer.short, "Pushing")
    assert moving and len(done) == 1, pushed.stderr
    lines = pushed.stderr.splitlines()
    assert lines.index(done[0]) < lines.index(f"{layer.short}: Pushed")
    quiet = cloche("push", "-q", name, f"localhost:{port}/progress/copy2:1", "--root", str(root))
    assert quiet.stderr == "" and quiet.stdout.startswith("sha256:")


def test_bars_show_bytes_and_rate_until_the_blob_is_done() -> None:
    """The tty view's rows (cloche pull/push, the build's live view): one bar per moving blob
    with its bytes and rate, gone after its final event."""
    from cloche.cli._live import TransferBars

    bars = TransferBars()
    total = 3_400_000
    desc = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", Digest.from_bytes(b"l"),
                      total)
    meter = ev.BlobMeter(bars.update, "r", desc, "pulling")  # type: ignore[arg-type]
    time.sleep(0.05)
    meter.add(1_050_000)
    [row] = bars.rows()
    text = row.plain
    assert f"pulling sha256:{desc.digest.short} " in text and "1.05MB / 3.40MB" in text
    assert re.search(r"  [0-9.]+[kMG]?B/s$", text), text
    assert "━" * TransferBars.WIDTH in text
    meter.finish()
    assert bars.rows() == []


def _slow(registry: Registry, client: RegistryClient, src_blobs: BlobStore,
          make_proxy: Callable[..., Proxy], repo: str) -> tuple[str, Digest]:
    """The big image pushed, and its name through a proxy that sends each blob in about
    two seconds."""
    img, layer = _big_image(src_blobs)
    push_manifest(f"{registry.host}/{repo}", img.manifest_bytes, img.media_type, src_blobs,
                  client=client)
    proxy = make_proxy(registry.host)
    proxy.add("GET", "/blobs/", "slow", times=100)
    return f"{proxy.host}/{repo}", layer


def test_a_slow_pull_is_throttled(registry: Registry, client: RegistryClient,
                                  src_blobs: BlobStore, dst_blobs: BlobStore,
                                  make_proxy: Callable[..., Proxy]) -> None:
    """Two seconds of 64 KiB pieces: about one event per 0.1 s, not one per piece."""
    name, layer = _slow(registry, client, src_blobs, make_proxy, "progress/slow:1")
    seen = Seen()
    started = time.monotonic()
    pull_blobs(Reference.parse(name), dst_blobs, client=client, listener=seen)
    elapsed = time.monotonic() - started
    events = seen.progress(layer, "pulling")
    assert elapsed > 1.5
    _check_grows(events, src_blobs.size(layer), bound=elapsed / ev.BlobMeter.INTERVAL + 2)
    assert len(events) >= 5  # and more than the first and the last


def test_cli_plain_pull_prints_a_line_a_second(registry: Registry, client: RegistryClient,
                                               src_blobs: BlobStore, tmp_path: Path,
                                               make_proxy: Callable[..., Proxy]) -> None:
    name, layer = _slow(registry, client, src_blobs, make_proxy, "progress/slowcli:1")
    started = time.monotonic()
    pulled = cloche("pull", name, "--root", str(tmp_path / "store"))
    elapsed = time.monotonic() - started
    moving, done = _lines(pulled.stderr, layer.short, "Downloading")
    assert len(done) == 1 and 2 <= len(moving) <= elapsed + 1, pulled.stderr


def test_cli_pull_on_a_terminal(registry: Registry, client: RegistryClient,
                                src_blobs: BlobStore, tmp_path: Path,
                                make_proxy: Callable[..., Proxy]) -> None:
    """``cloche pull`` with a terminal for stderr: a bar with bytes and rate while the layer
    comes, then Docker's lines; no plain byte lines."""
    import pty
    import subprocess
    import sys

    name, layer = _slow(registry, client, src_blobs, make_proxy, "progress/tty:1")
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "cloche.cli.main", "pull", name, "--root",
                               str(tmp_path / "store")], stderr=follower,
                              stdout=subprocess.PIPE, timeout=120, check=True)
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                data = os.read(leader, 1 << 16)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    shown = b"".join(chunks).decode("utf-8", "replace")
    assert proc.stdout.decode().strip() == name
    assert f"{layer.short}: Pull complete" in shown and "Status: Downloaded" in shown
    assert "Downloading" not in shown  # the bytes were a bar, not lines
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", shown)
    bar = re.compile(rf"pulling sha256:{layer.short} ━+ [0-9.]+[kM]?B / 5\.24MB  [0-9.]+[kM]?B/s")
    assert bar.search(plain), plain
