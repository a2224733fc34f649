"""The default network of a RUN step: a namespace of its own, wired out by slirp4netns.

Docker's builder gives RUN a network namespace on a bridge; a daemonless builder has no
bridge, so cloche does what rootless container engines do: the init unshares a network
namespace and ``slirp4netns`` (user-mode TCP/IP, a process on the host side) plugs a tap
device into it. The step sees ``lo`` and ``tap0`` (10.0.2.100/24, gateway 10.0.2.2, DNS
10.0.2.3 relayed to the host's resolver) and reaches the outside through sockets that slirp
opens on the host's behalf: nothing of the host's traffic is visible to it (its CAP_NET_RAW
sees its own namespace only), and ``--disable-host-loopback`` keeps the host's loopback
services (a registry, a database, a metadata proxy) out of reach: 127.0.0.1 is the step's
own loopback, and 10.0.2.2 does not lead to the host's. DNS queries to 10.0.2.3 are relayed
by slirp to the first nameserver of the host's /etc/resolv.conf, a loopback one (such as
systemd-resolved's 127.0.0.53) included. slirp itself runs with its own seccomp filter and,
where it can still read the resolver configuration, in a mount namespace of its own.

slirp's own sandbox copies the caller's mount namespace, makes only ``/`` private and then
detaches the old root tree: below any shared mount (Docker's /var/lib/docker, every mount of
a systemd host) that detach propagates back and unmounts the host's mounts, a running
container's root filesystem among them. So slirp is started through util-linux's
``unshare --mount --propagation private``: the namespace it copies is already private all
the way down, and nothing it unmounts reaches the host. Without ``unshare`` it runs
unsandboxed rather than harm the host.

Proxies: BuildKit passes proxy build args (HTTP_PROXY...) to every RUN as they are. A proxy
on the host's loopback could not be reached from a namespace of its own, so when the caller
gives such a build arg, ``loopback_proxies`` rewrites it to slirp's host address and the step
gets host loopback access (the caller chose to point the build at a service there).

Lifetime: slirp's ``--exit-fd`` is a pipe whose only write end the runner holds, so slirp
exits when the step ends, when the runner closes it (every exit path, Ctrl-C and cancel
included) and when cloche itself dies (kill -9: the kernel closes it).
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

from cloche.errors import SandboxError
from cloche.rootless.identity import in_user_namespace

SLIRP = "slirp4netns"
SLIRP_HOST = "10.0.2.2"  # the gateway: the host, as slirp's sockets see it
SLIRP_DNS = "10.0.2.3"  # slirp's DNS relay to the host's resolver
TAP = "tap0"
MTU = 65520  # slirp terminates TCP itself: a large MTU costs nothing and is faster
READY_TIMEOUT = 30.0
INSTALL_HINT = ("install slirp4netns (apt-get install slirp4netns), or build with "
                "--network=none")
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class NetworkSetupError(SandboxError):
    """The step's own network could not be set up (slirp4netns missing or failing)."""


def _find_tool(name: str, fallbacks: tuple[str, ...]) -> str | None:
    """``name`` on PATH, else the first executable of ``fallbacks`` (PATH may be trimmed)."""
    return shutil.which(name) or next((p for p in fallbacks if os.access(p, os.X_OK)), None)


def slirp_binary() -> str:
    """The slirp4netns to run, or NetworkSetupError with an install hint."""
    found = _find_tool(SLIRP, ("/usr/bin/slirp4netns", "/usr/local/bin/slirp4netns"))
    if found is None:
        raise NetworkSetupError("a RUN step's default network needs slirp4netns, which is "
                                "not installed", hint=INSTALL_HINT)
    return found


TUN = "/dev/net/tun"


def check_tun() -> None:
    """In a user namespace (a rootless build) slirp can open /dev/net/tun only if its mode
    lets everyone (0666, what udev sets on most distributions): say so before the step."""
    if not in_user_namespace() or os.access(TUN, os.R_OK | os.W_OK):
        return
    hint = (f"as root, give it its usual mode: chmod 0666 {TUN} (udev does on most "
            "distributions), or build with --network=none")
    try:
        mode = f"mode {os.stat(TUN).st_mode & 0o7777:04o}"
    except OSError as err:
        mode = err.strerror or "missing"
        if not os.path.lexists(TUN):  # a container's /dev has no tun unless given one
            hint = (f"in a container, start it with the device (docker run --device {TUN}), "
                    "or build with --network=none (docs/container.md)")
    raise NetworkSetupError(
        f"a RUN step's default network needs {TUN}, which a build without root cannot open "
        f"here ({mode})", hint=hint)


def _private_mounts_prefix() -> list[str] | None:
    """The command that starts slirp in a mount namespace private all the way down (nothing
    propagates back to the host's), or None when util-linux's unshare is missing."""
    found = _find_tool("unshare", ("/usr/bin/unshare", "/bin/unshare"))
    return None if found is None else [found, "--mount", "--propagation", "private", "--"]


def resolv_conf(host_text: str) -> str:
    """/etc/resolv.conf of a step on slirp's network: the host's search and options lines,
    with slirp's DNS relay as the only nameserver (the host's may be on its loopback)."""
    kept = [line for line in host_text.splitlines()
            if line.split()[:1] in (["search"], ["domain"], ["options"])]
    return "".join(f"{line}\n" for line in kept) + f"nameserver {SLIRP_DNS}\n"


def _is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    return host in _LOOPBACK_NAMES or host == "::1" or host.startswith("127.")


def loopback_proxies(env: Mapping[str, str]) -> tuple[dict[str, str], bool]:
    """Proxy variables with a host-loopback address rewritten to slirp's host address, and
    whether any was (the step then needs host loopback access). ``NO_PROXY`` is a list of
    names, not an address: left alone."""
    out, rewritten = dict(env), False
    for name, value in env.items():
        if name.lower() == "no_proxy" or not value:
            continue
        schemed = "://" in value
        try:
            parts = urlsplit(value if schemed else "http://" + value)
            host, port = parts.hostname, parts.port
        except ValueError:
            continue  # not a URL: passed on as it is
        if host is None or not _is_loopback_host(host):
            continue
        user = parts.netloc.rpartition("@")[0]
        netloc = (f"{user}@" if user else "") + SLIRP_HOST + (f":{port}" if port else "")
        new = urlunsplit(parts._replace(netloc=netloc))
        out[name] = new if schemed else new.split("://", 1)[1]
        rewritten = True
    return out, rewritten


def _ends_soon(alive: Callable[[], bool], within: float = 2.0) -> bool:
    """Whether the init ends within ``within`` seconds: slirp fails first when the init is
    already leaving (its namespace goes before it can be waited for)."""
    deadline = time.monotonic() + within
    while alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _sandbox_sees_resolv_conf() -> bool:
    """slirp4netns's ``--enable-sandbox`` keeps only the host's /etc and /run in view, and
    before 1.2.1 it does not bind a /etc/resolv.conf that links elsewhere (slirp4netns issue
    315: DNS through 10.0.2.3 then fails): sandbox slirp when its DNS relay can read it."""
    real = os.path.realpath("/etc/resolv.conf")
    return real.startswith(("/etc/", "/run/"))


class UserNetwork:
    """slirp4netns for one step's network namespace; ``close`` ends it (idempotent).

    The init gets ``init_fd`` and waits on it before running the command: one byte once the
    network is up, EOF if it never will be (the step then fails to set up).
    """

    def __init__(self, *, host_loopback: bool = False) -> None:
        self.binary = slirp_binary()
        check_tun()
        self.host_loopback = host_loopback
        self._go_r, self._go_w = os.pipe()
        self._exit_w = -1
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def init_fd(self) -> int:
        """The read end the init waits on (pass it to the init's process)."""
        return self._go_r

    def handed_over(self) -> None:
        """The init has its copy of ``init_fd``: drop ours."""
        if self._go_r >= 0:
            os.close(self._go_r)
            self._go_r = -1

    def start(self, pid: int, alive: Callable[[], bool]) -> None:
        """Attach slirp to the network namespace of ``pid``, wait until it is configured,
        then let the init go on. Returns early (the init is gone) when ``alive`` says so."""
        exit_r, self._exit_w = os.pipe()
        ready_r, ready_w = os.pipe()
        argv = [self.binary, "--configure", f"--mtu={MTU}", f"--ready-fd={ready_w}",
                f"--exit-fd={exit_r}", "--enable-seccomp"]
        private = _private_mounts_prefix()
        if private is not None and _sandbox_sees_resolv_conf():
            # slirp parses the step's packets: confine it, in a namespace whose unmounts
            # cannot propagate to the host (module docstring)
            argv = private + argv + ["--enable-sandbox"]
        if not self.host_loopback:
            argv.append("--disable-host-loopback")
        argv += [str(pid), TAP]
        with tempfile.TemporaryFile() as log:  # unlinked: nothing left behind, ever
            try:
                self._proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    pass_fds=(ready_w, exit_r), start_new_session=True, cwd="/")
            finally:
                os.close(ready_w)
                os.close(exit_r)
            try:
                ready = self._wait_ready(ready_r, alive)
            finally:
                os.close(ready_r)
            if not ready:
                if _ends_soon(alive):
                    return  # the step ended (set-up failed, cancelled): nothing to connect
                log.seek(0)
                text = " ".join(log.read(4000).decode(errors="replace").split())
                raise NetworkSetupError("slirp4netns could not set up the step's network"
                                        + (f": {text}" if text else ""), hint=INSTALL_HINT)
        try:
            os.write(self._go_w, b"1")
        except BrokenPipeError:
            pass  # the init ended meanwhile: its status says why
        os.close(self._go_w)
        self._go_w = -1

    def _wait_ready(self, ready_r: int, alive: Callable[[], bool]) -> bool:
        """True once slirp says it is ready; False if it or the init ended first."""
        assert self._proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if select.select([ready_r], [], [], 0.1)[0]:
                return os.read(ready_r, 1) == b"1"
            if self._proc.poll() is not None or not alive():
                return False
        raise NetworkSetupError(f"slirp4netns did not get ready in {READY_TIMEOUT:.0f}s",
                                hint=INSTALL_HINT)

    def close(self) -> None:
        """End slirp and drop every descriptor; the step's namespace goes with its last
        process."""
        for name in ("_exit_w", "_go_w", "_go_r"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)  # exit_w: slirp exits by itself; go_w: the init sees EOF
                setattr(self, name, -1)
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None
