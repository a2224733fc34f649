"""Issue 9, item 6: network isolation. A default RUN has a network namespace of its own,
wired to the outside by user-mode networking (slirp4netns), as Docker's builder gives RUN a
bridge namespace: the host's loopback services are out of its reach, its traffic is its own,
and outbound DNS and HTTP still work. ``--network=none`` for the build is not overridden by
``RUN --network=default``; ``host`` is an entitlement (tests/security/test_entitlements.py).

Real servers on the host side record every connection they get: those a step must not reach
have to stay without one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cloche.sandbox import RunSpec, mount_overlay, run
from cloche.sandbox.cancel import CancelScope, StepCancelled
from cloche.sandbox.network import loopback_proxies, resolv_conf
from tests.engine.conftest import BASE, CLOCHE, Builder, rootfs
from tests.fixtures.golang import GoBaseImages
from tests.sandbox.conftest import Layer


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        body = self.server.token.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(host: str) -> Iterator[tuple[int, str, list[str]]]:
    """An HTTP server on ``host``: (port, the token it answers, the paths it was asked)."""
    server = ThreadingHTTPServer((host, 0), _Answer)
    server.token = uuid.uuid4().hex  # type: ignore[attr-defined]
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], server.token, server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def loopback_server() -> Iterator[tuple[int, str, list[str]]]:
    yield from _serve("127.0.0.1")


def _get(host: str, port: int | str, path: str, *, name: str = "x", wait: int = 3) -> str:
    """A shell line that sends an HTTP GET with busybox nc and prints the answer, nothing if
    it cannot connect (busybox wget is static glibc here: it crashes looking up a service)."""
    request = f"GET {path} HTTP/1.1\\r\\nHost: {name}\\r\\nConnection: close\\r\\n\\r\\n"
    return (f"rm -f /tmp/got; busybox nc -w {wait} {host} {port} -e sh -c "
            f"\"printf '{request}'; cat > /tmp/got\"; cat /tmp/got 2>/dev/null")


def _primary_address() -> str:
    """The host's address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))
        address = s.getsockname()[0]
    assert not address.startswith("127.")
    return str(address)


@pytest.fixture
def outside_server() -> Iterator[tuple[str, int, str, list[str]]]:
    address = _primary_address()
    for port, token, seen in _serve(address):
        yield address, port, token, seen


def _slirps_of(parent: int) -> list[int]:
    """slirp4netns processes (zombies included) whose parent is ``parent``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if name == "slirp4netns" and ppid == parent:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --- the namespace ------------------------------------------------------------------------


def test_default_run_has_its_own_network_namespace(layer: Layer) -> None:
    step = layer.run("readlink /proc/self/ns/net; ls /sys/class/net")
    assert step.result.ok, step.err
    ns, *interfaces = step.text.split()
    assert ns != os.readlink("/proc/self/ns/net")
    assert sorted(interfaces) == ["lo", "tap0"]


def test_default_run_cannot_reach_host_loopback(layer: Layer,
                                                loopback_server: tuple[int, str, list[str]]
                                                ) -> None:
    """127.0.0.1 is the step's own loopback, and slirp's host alias 10.0.2.2 does not lead to
    the host's (a registry or a proxy listening there)."""
    port, token, seen = loopback_server
    step = layer.run(f"{_get('127.0.0.1', port, '/a')}; {_get('10.0.2.2', port, '/b')}; true")
    assert token not in step.text
    assert seen == []


def test_default_run_reaches_the_host_on_a_non_loopback_address(
        layer: Layer, outside_server: tuple[str, int, str, list[str]]) -> None:
    address, port, token, seen = outside_server
    step = layer.run(_get(address, port, "/x", wait=10))
    assert step.result.ok, step.err
    assert step.text.splitlines()[-1] == token and seen == ["/x"]


def test_default_run_uses_slirp_dns_and_reaches_debian_over_http(layer: Layer) -> None:
    """DNS through slirp's 10.0.2.3 and plain HTTP to deb.debian.org, as apt does it (static
    busybox cannot resolve names through glibc; its nslookup has a resolver of its own)."""
    release = _get("$ip", 80, "/debian/dists/bookworm/Release", name="deb.debian.org", wait=20)
    step = layer.run(
        "cat /etc/resolv.conf; "
        "ip=$(busybox nslookup deb.debian.org | sed -n 's/^Address: *//p' | tail -n 1); "
        f"{release} | grep '^Origin:'")
    assert step.result.ok, step.err
    lines = step.text.splitlines()
    nameservers = [ln.split()[1] for ln in lines if ln.startswith("nameserver")]
    assert nameservers == ["10.0.2.3"]
    assert lines[-1].strip() == "Origin: Debian"


def _examples_rootfs() -> Path:
    cache = Path(os.environ.get("CLOCHE_EXAMPLES_CACHE", "/var/cache/cloche-examples"))
    return cache / f"golang-{os.environ.get('DEBIAN_SUITE', 'bookworm')}-rootfs"


def test_apt_get_update_works_in_a_default_run(go_base_images: GoBaseImages,
                                               tmp_path: Path) -> None:
    """The real thing: apt over plain HTTP from a Debian rootfs (the examples' debootstrap,
    which the go_base_images fixture makes once and caches)."""
    lower = _examples_rootfs()
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    out: list[bytes] = []
    with mount_overlay([lower], upper, work, merged):
        result = run(RunSpec(merged, ("/bin/sh", "-c",
                                      "apt-get update && apt-cache show hello | head -n 1"),
                             stdout=out.append, stderr=out.append, timeout=600))
    text = b"".join(out).decode(errors="replace")
    assert result.ok, text
    assert "deb.debian.org" in text and "Package: hello" in text


# --- the build's network mode -------------------------------------------------------------


def test_build_network_none_is_not_overridden_by_run_default(builder: Builder,
                                                             tmp_path: Path) -> None:
    result = builder.build(f"FROM {BASE}\nRUN --network=default ls /sys/class/net > /n\n",
                           network="none")
    assert (rootfs(result.image, tmp_path / "out") / "n").read_text().split() == ["lo"]


def test_default_build_run_is_isolated(builder: Builder, tmp_path: Path,
                                       loopback_server: tuple[int, str, list[str]]) -> None:
    port, token, seen = loopback_server
    result = builder.build(
        f"FROM {BASE}\nRUN readlink /proc/self/ns/net > /ns; "
        f"{_get('10.0.2.2', port, '/')} > /got; {_get('127.0.0.1', port, '/')} >> /got; true\n")
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "ns").read_text().strip() != os.readlink("/proc/self/ns/net")
    assert token not in (root / "got").read_text() and seen == []


def test_loopback_proxy_build_arg_is_reached_through_slirp(
        builder: Builder, tmp_path: Path, loopback_server: tuple[int, str, list[str]]) -> None:
    """A proxy on the host's loopback, given as a proxy build arg by the caller, is rewritten
    to slirp's host address: the step reaches that proxy."""
    port, token, seen = loopback_server
    result = builder.build(
        f"FROM {BASE}\nRUN env | grep -i '^http_proxy=' | sort > /env; "
        "hostport=${http_proxy#http://}; "
        f"{_get('${hostport%:*}', '${hostport#*:}', 'http://example.invalid/through-proxy')}"
        " > /got\n",
        build_args={"HTTP_PROXY": f"http://127.0.0.1:{port}"})
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "env").read_text().split() == [f"HTTP_PROXY=http://10.0.2.2:{port}",
                                                  f"http_proxy=http://10.0.2.2:{port}"]
    assert (root / "got").read_text().splitlines()[-1] == token
    assert seen == ["http://example.invalid/through-proxy"]


def test_a_dockerfile_cannot_open_the_host_loopback_with_a_proxy(
        builder: Builder, tmp_path: Path, loopback_server: tuple[int, str, list[str]]) -> None:
    """Only the caller's proxy build args open slirp's way to the host's loopback: not an ENV
    nor an ARG default that the Dockerfile sets itself."""
    port, token, seen = loopback_server
    result = builder.build(
        f"FROM {BASE}\nENV http_proxy=http://127.0.0.1:{port}\n"
        f"ARG HTTP_PROXY=http://127.0.0.1:{port}\n"
        f"RUN {_get('10.0.2.2', port, '/')} > /got; true\n")
    assert token not in (rootfs(result.image, tmp_path / "out") / "got").read_text()
    assert seen == []


@pytest.mark.parametrize("value,expected", [
    ("http://127.0.0.1:3128", "http://10.0.2.2:3128"),
    ("http://user:pw@localhost:8080/", "http://user:pw@10.0.2.2:8080/"),
    ("127.0.0.1:3128", "10.0.2.2:3128"),
    ("socks5://[::1]:1080", "socks5://10.0.2.2:1080"),
    ("http://proxy.example.com:3128", "http://proxy.example.com:3128"),
    ("http://192.0.2.7:3128", "http://192.0.2.7:3128"),
])
def test_loopback_proxies_are_rewritten_to_slirps_host(value: str, expected: str) -> None:
    out, rewritten = loopback_proxies({"HTTP_PROXY": value, "http_proxy": value,
                                       "NO_PROXY": "localhost,127.0.0.1"})
    assert out == {"HTTP_PROXY": expected, "http_proxy": expected,
                   "NO_PROXY": "localhost,127.0.0.1"}
    assert rewritten == (value != expected)


def test_step_resolv_conf_keeps_search_and_options() -> None:
    host = "# generated\nsearch corp.example\nnameserver 127.0.0.53\noptions edns0 ndots:2\n"
    assert resolv_conf(host) == ("search corp.example\noptions edns0 ndots:2\n"
                                 "nameserver 10.0.2.3\n")


# --- the slirp process lives and dies with its step -----------------------------------------


def test_slirp_ends_with_the_step(layer: Layer) -> None:
    assert layer.run("true").result.ok
    assert _slirps_of(os.getpid()) == []


def test_slirp_ends_when_the_step_is_cancelled(layer: Layer) -> None:
    scope = CancelScope()
    failures: list[BaseException] = []

    def step() -> None:
        try:
            run(RunSpec(layer.merged, ("/bin/sleep", "1000"), cancel=scope))
        except BaseException as e:  # noqa: BLE001 - checked below
            failures.append(e)

    thread = threading.Thread(target=step)
    thread.start()
    deadline = time.monotonic() + 20
    while not _slirps_of(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.05)
    slirps = _slirps_of(os.getpid())
    assert slirps
    scope.cancel()
    thread.join(30)
    assert isinstance(failures[0], StepCancelled)
    assert [pid for pid in slirps if _alive(pid)] == []


def test_slirp_ends_when_cloche_is_killed(builder: Builder) -> None:
    ctx = builder.context(f"FROM {BASE}\nRUN sleep 1000\n")
    proc = subprocess.Popen(CLOCHE + ["build", "--root", str(builder.root), "--progress",
                                      "plain", str(ctx)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _slirps_of(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        slirps = _slirps_of(proc.pid)
        assert slirps
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in slirps) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in slirps if _alive(pid)] == []



def test_slirp_unmounts_nothing_of_the_host(layer: Layer, tmp_path: Path) -> None:
    """slirp4netns's own sandbox copies the caller's mount namespace, makes only / private,
    and detaches the old root: any mount below a shared mount (Docker's /var/lib/docker is
    one, every mount is on systemd hosts) had its unmount propagated to the host, and a
    container or build running there lost its root filesystem. slirp starts in a namespace
    of its own that receives nothing and sends nothing back."""
    shared = tmp_path / "shared"
    (shared / "sub").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(shared), str(shared)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(shared)], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(shared / "sub")], check=True)
        (shared / "sub" / "mark").write_text("x")
        step = layer.run("cat /etc/resolv.conf >/dev/null; echo ran")
        assert step.result.ok and step.text.strip() == "ran", step.err
        assert os.path.ismount(shared / "sub"), "a default-network RUN unmounted a host mount"
        assert (shared / "sub" / "mark").read_text() == "x"
    finally:
        subprocess.run(["umount", "-R", "-l", str(shared)], check=False)
