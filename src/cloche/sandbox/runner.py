"""Run one RUN step in the sandbox: prepare the rootfs, start the init, stream output, clean up.

The caller mounts the stage's overlay (``overlay.mount_overlay``) and calls ``run`` with the
merged directory. This side of the sandbox stays in the caller's namespaces: it creates the
mount-point stubs (confined to the rootfs) and the generated /etc/hosts and /etc/resolv.conf,
starts ``cloche.sandbox.init`` in a fresh interpreter, pumps the command's stdout and stderr
to the caller's sinks from threads (one pipe and one thread when both go to one callback),
enforces the timeout and, on any exit path including Ctrl-C, kills the init so that nothing
of the step keeps running.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import cloche
from cloche.errors import SandboxError
from cloche.fs.owners import recording, set_owner
from cloche.fs.paths import resolve_in_root
from cloche.fs.rmtree import rmtree
from cloche.sandbox.cancel import CancelScope, StepCancelled, kill_step
from cloche.sandbox.cgroups import StepGroup, Usage
from cloche.sandbox.initconfig import InitConfig, InitMount
from cloche.sandbox.network import UserNetwork
from cloche.sandbox.network import resolv_conf as user_network_resolv_conf
from cloche.sandbox.scratch import make_scratch
from cloche.sandbox.secrets import SecretFiles
from cloche.sandbox.spec import RunResult, RunSpec, Sink
from cloche.sandbox.stubs import Stubs

ROOT_HINT = ("run as root, or enter a user namespace first: the `cloche build` command does, "
             "a program calls cloche.rootless.enter() (docs/rootless.md)")
FALLBACK_RESOLV = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
_SRC_DIR = str(Path(cloche.__file__).resolve().parent.parent)


class SandboxSetupError(SandboxError):
    """The sandbox failed before the command could start (mounts, namespaces)."""


def require_root() -> None:
    """Raise SandboxError unless the process can create the sandbox: root, the host's or that
    of a user namespace (cloche.rootless)."""
    if os.geteuid() != 0:
        raise SandboxError("running a RUN step needs root privileges "
                           f"(running as uid {os.geteuid()})", hint=ROOT_HINT)


def hosts_file(hostname: str, extra_hosts: tuple[tuple[str, str], ...] = ()) -> str:
    """/etc/hosts as BuildKit generates it for a RUN step."""
    text = f"127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    return text + "".join(f"{ip}\t{name}\n" for name, ip in extra_hosts)


def resolv_conf() -> str:
    """The host's /etc/resolv.conf (what ``host`` and ``none`` steps get), or public
    resolvers."""
    try:
        with open("/etc/resolv.conf", encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError:
        return FALLBACK_RESOLV
    return text if "nameserver" in text else text + FALLBACK_RESOLV


def step_resolv_conf(network: str) -> str:
    """/etc/resolv.conf for a step: slirp's DNS relay on the default network (the host's
    nameserver may be on its loopback, out of the step's reach), else the host's."""
    host = resolv_conf()
    return user_network_resolv_conf(host) if network == "default" else host


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


def _pump(stream: IO[bytes], sink: Callable[[bytes], None], failures: list[BaseException]) -> None:
    """Deliver what the process writes as it writes it, until every writer is gone.

    A sink that raises is not called again, but the pipe is still drained (a full pipe would
    block the step forever); the first failure is re-raised by ``run`` once the step is over.
    """
    with stream:
        while True:
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                return
            if failures:
                continue
            try:
                sink(chunk)
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                failures.append(e)


def _target(sink: Sink) -> int:
    if sink is None:
        return subprocess.DEVNULL
    if isinstance(sink, int):
        return sink
    return subprocess.PIPE


def _targets(stdout: Sink, stderr: Sink) -> tuple[int, int]:
    """The step's stdout and stderr; one callback for both gets one pipe for both (stderr
    to stdout's), so that it reads them in the order written, as BuildKit shows them."""
    if callable(stdout) and (stderr is stdout or stderr == stdout):  # == : bound methods
        return subprocess.PIPE, subprocess.STDOUT
    return _target(stdout), _target(stderr)


def _config(spec: RunSpec, stubs: Stubs, files: list[tuple[str, str]], status_fd: int,
            secrets: SecretFiles) -> InitConfig:
    mounts = []
    for m in spec.mounts:
        if m.kind == "secret":  # held in memory, never in a host file (sandbox/secrets.py)
            mounts.append(secrets.init_mount(m, str(stubs.ensure(m.target, is_dir=False))))
            continue
        is_dir = m.kind == "tmpfs" or (m.source is not None and m.source.is_dir())
        if m.source is not None and not m.source.exists():
            raise SandboxError(f"mount source {m.source} for {m.target} does not exist")
        mounts.append(InitMount(
            kind=m.kind, source=str(m.source) if m.source else None, path=m.target,
            target=str(stubs.ensure(m.target, is_dir=is_dir)),
            readonly=m.readonly, size=m.size, mode=m.mode))
    return InitConfig(
        parent_pid=os.getpid(), status_fd=status_fd, rootfs=str(spec.rootfs),
        argv=spec.argv, env=tuple(spec.final_env()), cwd=spec.cwd,
        uid=spec.user.uid, gid=spec.user.gid, groups=tuple(spec.user.additional_gids),
        hostname=spec.hostname, network=spec.network, init=spec.init,
        insecure=spec.security == "insecure",
        # kept in the layer when made (0755 root), as runc and BuildKit do
        proc=str(stubs.ensure("/proc", is_dir=True, keep=True)),
        dev=str(stubs.ensure("/dev", is_dir=True, keep=True)),
        sys=str(stubs.ensure("/sys", is_dir=True, keep=True)),
        files=tuple((src, str(stubs.ensure(dst, is_dir=False))) for src, dst in files),
        rlimits=tuple((u.name, u.soft, u.hard) for u in spec.limits.ulimits),
        shm_size=spec.limits.shm_size,
        mounts=tuple(mounts))


def _ensure_cwd(spec: RunSpec) -> None:
    """Create the working directory when missing (root, 0755); unlike stubs it stays in the
    layer, as with BuildKit."""
    host = resolve_in_root(spec.rootfs, spec.cwd)
    missing = []
    while not os.path.lexists(host) and host != spec.rootfs:
        missing.append(host)
        host = host.parent
    for d in reversed(missing):
        try:
            os.mkdir(d)
            os.chmod(d, 0o755)
            if recording():  # root's, not the step's user's (engine/plaintree.py)
                set_owner(d, 0, 0)
        except OSError as e:
            raise SandboxError(f"cannot create working directory {spec.cwd}: {e.strerror}") from e


def run(spec: RunSpec) -> RunResult:
    """Run ``spec.argv`` in a new sandbox over ``spec.rootfs`` and wait for it to end.

    Raises SandboxError when the sandbox cannot be set up; a failing command is a result
    (``exit_code``), not an exception.
    """
    require_root()
    if not spec.rootfs.is_dir():
        raise SandboxError(f"root filesystem {spec.rootfs} is not a directory")
    spec = dataclasses.replace(spec, rootfs=spec.rootfs.resolve(), mounts=tuple(
        dataclasses.replace(m, source=m.source.resolve()) if m.source else m for m in spec.mounts))
    scratch = make_scratch("run", spec.scratch)  # found stale if cloche is killed
    stubs = Stubs(spec.rootfs)
    secrets = SecretFiles(scratch)
    group: StepGroup | None = None
    usage = Usage()
    proc: subprocess.Popen[bytes] | None = None
    net: UserNetwork | None = None  # network "default": slirp4netns, tied to this step
    pumps: list[threading.Thread] = []
    failures: list[BaseException] = []
    status_r, status_w = os.pipe()
    pid1 = -1
    pid1_box = [-1]  # shared with the scope's cancel()
    scope = spec.cancel or CancelScope()  # a step run on its own has a scope of its own
    key = 0
    try:
        files = [(str(_write(scratch / "hosts", hosts_file(spec.hostname, spec.extra_hosts))),
                  "/etc/hosts"),
                 (str(_write(scratch / "resolv.conf", step_resolv_conf(spec.network))),
                  "/etc/resolv.conf")]
        _ensure_cwd(spec)
        cfg = _config(spec, stubs, files, status_w, secrets)
        if spec.network == "default":
            net = UserNetwork(host_loopback=spec.host_loopback)
            cfg = dataclasses.replace(cfg, net_fd=net.init_fd)
        group = StepGroup.create(spec.cgroup, spec.limits)  # limits (sandbox/cgroups.py)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": _SRC_DIR}
        out_target, err_target = _targets(spec.stdout, spec.stderr)
        proc = subprocess.Popen(
            [sys.executable, "-S", "-m", "cloche.sandbox.init"],
            stdin=subprocess.PIPE, stdout=out_target, stderr=err_target,
            pass_fds=(status_w, *secrets.fds, *((net.init_fd,) if net else ())),
            start_new_session=True, env=env, cwd="/")
        secrets.close()  # the init holds them now
        if net is not None:
            net.handed_over()
        if group is not None:
            group.add(proc.pid)  # before it reads its configuration, so before it forks
        os.close(status_w)
        status_w = -1
        for stream, sink in ((proc.stdout, spec.stdout), (proc.stderr, spec.stderr)):
            if stream is not None and callable(sink):
                t = threading.Thread(target=_pump, args=(stream, sink, failures), daemon=True,
                                     name="cloche-sandbox-output")
                t.start()
                pumps.append(t)
        assert proc.stdin is not None
        try:
            with proc.stdin:
                proc.stdin.write(cfg.encode())
        except BrokenPipeError:
            pass  # the helper died first: its status (or its absence) says why
        key = id(proc)
        if scope._enter(key, proc, pid1_box):
            kill_step(proc, -1)
        first = _read_line(status_r)
        if first.startswith("pid1 "):
            pid1 = pid1_box[0] = _pidfd(int(first.split()[1]))
            if net is not None:  # the helper is in the step's network namespace by now
                helper = proc
                net.start(helper.pid, alive=lambda: helper.poll() is None)
        timed_out = False
        try:
            proc.wait(spec.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_step(proc, pid1)
        for t in pumps:
            t.join()
        status = first if not first.startswith("pid1 ") else _read_status(status_r)
    except BaseException:
        if proc is not None:
            kill_step(proc, pid1)
        for t in pumps:
            t.join()
        raise
    finally:
        if net is not None:
            net.close()
        was_cancelled = scope._leave(key)
        os.close(status_r)
        if status_w >= 0:
            os.close(status_w)
        if pid1 >= 0:
            os.close(pid1)
        secrets.close()
        if group is not None:
            usage = group.usage()
            group.remove()
        removed, parents = stubs.remove()
        rmtree(scratch, True)
    if was_cancelled:
        raise StepCancelled("the step was cancelled: the build was interrupted")
    if failures:
        raise failures[0]
    if timed_out:
        return RunResult(137, 9, True, removed, parents, usage.oom_killed, usage.pids_refused)
    kind, _, value = status.partition(" ")
    if kind == "exit":
        return RunResult(int(value), None, False, removed, parents, usage.oom_killed,
                         usage.pids_refused)
    if kind == "signal":
        return RunResult(128 + int(value), int(value), False, removed, parents,
                         usage.oom_killed, usage.pids_refused)
    if kind == "error":
        raise SandboxSetupError(f"the sandbox could not be set up: {value}",
                                hint=_setup_hint(value))
    raise SandboxSetupError(f"the sandbox ended without a status (code {proc.returncode})")


def _setup_hint(failure: str) -> str | None:
    """What to change for the set-up failures a container's defaults cause (docs/container.md)."""
    if "Operation not permitted" not in failure:
        return None
    if failure.startswith("mount /proc:"):
        # In a user namespace the kernel mounts a new proc only where the current one is
        # fully visible; a container's default /proc has masked paths (/proc/kcore, ...).
        return ("this container's /proc has masked paths, so the kernel refuses the step a "
                "/proc of its own: run the container with them unmasked (docker run "
                "--security-opt systempaths=unconfined; Kubernetes: procMount: Unmasked), "
                "or build with --isolation=chroot (docs/container.md)")
    if failure.startswith("bring up loopback:"):
        return ("the step's network namespace needs CAP_NET_ADMIN: run the container with "
                "--cap-add NET_ADMIN, or build as its non-root user (docs/container.md)")
    return None


def _pidfd(pid: int) -> int:
    """A pidfd for PID 1 of the step (signals through it cannot hit a reused PID); -1 if gone."""
    try:
        return os.pidfd_open(pid)
    except OSError:
        return -1


def _read_line(fd: int) -> str:
    """One line from the status pipe (byte by byte: the rest is read later)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _read_status(fd: int) -> str:
    data = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    lines = data.decode(errors="replace").splitlines()
    errors = [line for line in lines if line.startswith("error ")]
    return errors[0] if errors else (lines[-1] if lines else "")
