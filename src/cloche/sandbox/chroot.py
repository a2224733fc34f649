"""Run one RUN step without namespaces or mounts: proot over a plain root directory.

The chroot isolation mode (engine/isolation.py, docs/isolation.md) is for places where no
namespace and no mount may be made: an unprivileged container. proot (ptrace-based path
translation) gives the command ``spec.rootfs`` as its root and shows it the container's
/proc, /dev and /sys, the generated /etc/hosts and /etc/resolv.conf, and every ``--mount``
(``-b HOST:GUEST``), without mounting anything. The process is forked as root, takes the
step's groups, gid and uid (so a USER step really runs as that user), then execs proot.

What differs from the namespaces sandbox, all said in docs/isolation.md: the network,
devices, processes, /proc and /sys are the container's; no seccomp filter or cgroup limit of
cloche's own; a read-only ``--mount`` is a private copy (proot has no read-only binds: a write
succeeds and is thrown away); a secret is a 0400 file in the build's scratch, removed right
after the step; the step ends when its last process ends (proot waits for them all).

Output reaches the sinks as the namespace runner delivers it (one ordered stream when one
callback takes both), and the step's mount stubs are made and removed by the same code.
"""

from __future__ import annotations

import dataclasses
import os
import re
import resource
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cloche.errors import SandboxError
from cloche.fs.copytree import copytree
from cloche.fs.rmtree import rmtree
from cloche.sandbox.cancel import CancelScope, StepCancelled
from cloche.sandbox.limits import STARTING_NOFILE, UNLIMITED
from cloche.sandbox.runner import (
    SandboxSetupError,
    _ensure_cwd,
    _pump,
    _targets,
    _write,
    hosts_file,
    resolv_conf,
)
from cloche.sandbox.scratch import make_scratch
from cloche.sandbox.spec import RunResult, RunSpec
from cloche.sandbox.stubs import Stubs

PROOT_HINT = "install proot (Debian and Ubuntu: apt-get install proot), see docs/isolation.md"
# what proot says on stderr when the command was killed by a signal (it then exits 255)
_MARK = b"proot info: pid "
_SIGNALLED = re.compile(rb"proot info: pid \d+: terminated with signal (\d+)\n?")


def find_proot() -> str:
    """The proot program, or a SandboxError that says how to get it."""
    found = shutil.which("proot", path=os.environ.get("PATH") or "/usr/bin:/bin")
    if found is None:
        raise SandboxError("RUN with --isolation=chroot needs proot, which is not installed",
                           hint=PROOT_HINT)
    return found


class _Signalled:
    """Wraps the sink of the command's stderr: proot's closing "terminated with signal N"
    line is taken out of the output and kept as the step's signal."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self.sink = sink
        self.held = b""
        self.signal: int | None = None
        self._lock = threading.Lock()

    def __call__(self, chunk: bytes) -> None:
        with self._lock:
            data = self.held + chunk
            start = data.rfind(b"\n", 0, len(data) - 1) + 1  # the last line, whole or not
            tail = data[start:]
            if tail[:len(_MARK)] == _MARK[:len(tail)] and len(tail) < 256 and (
                    not tail.endswith(b"\n") or _SIGNALLED.fullmatch(tail)):
                self.held, data = tail, data[:start]
            else:
                self.held = b""
        if data:
            self.sink(data)

    def finish(self) -> None:
        with self._lock:
            held, self.held = self.held, b""
        match = _SIGNALLED.fullmatch(held)
        if match is not None:
            self.signal = int(match.group(1))
        elif held:
            self.sink(held)


class _GroupProcess(subprocess.Popen[bytes]):
    """proot and every process of the step are one process group: killing the step (the
    build's cancel scope, a timeout) kills the group."""

    def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        super().kill()

    def wait_group(self, limit: float = 10.0) -> None:
        """Wait (a bounded while) until no process of the group is left: SIGKILL takes effect
        when each process next runs, and an orphan is reaped by init, so on a loaded machine a
        killed step's background process may outlive the kill by a moment. The step returns
        only once they are gone (or ``limit`` seconds passed)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                os.killpg(self.pid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.01)


def _private_copy(source: Path, scratch: Path, n: int) -> Path:
    """A copy of a read-only mount's source, so that the step cannot change the original."""
    copy = scratch / f"ro-{n}"
    if source.is_dir():
        copytree(source, copy)
        copy.chmod(source.stat().st_mode & 0o7777)
    else:
        shutil.copy2(source, copy)
        if os.geteuid() == 0:
            st = source.stat()
            os.chown(copy, st.st_uid, st.st_gid)
    return copy


def _binds(spec: RunSpec, stubs: Stubs, scratch: Path) -> list[tuple[str, str]]:
    """(host, guest) pairs for proot's -b: kernel trees, generated files, the step's mounts.
    Guests are the stubs' paths inside the root (symlinks already resolved inside it)."""
    def guest(host: Path) -> str:
        return "/" + str(host.relative_to(spec.rootfs))

    binds = []
    for name in ("/proc", "/dev", "/sys"):  # kept in the layer when made, as runc does
        binds.append((name, guest(stubs.ensure(name, is_dir=True, keep=True))))
    files = [(_write(scratch / "hosts", hosts_file(spec.hostname, spec.extra_hosts)),
              "/etc/hosts"),
             (_write(scratch / "resolv.conf", resolv_conf()), "/etc/resolv.conf")]
    for source, target in files:
        binds.append((str(source), guest(stubs.ensure(target, is_dir=False))))
    for n, m in enumerate(spec.mounts):
        if m.kind == "secret":
            assert m.data is not None
            holder = scratch / "secrets"
            holder.mkdir(mode=0o711, exist_ok=True)
            path = holder / str(n)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(m.data)
                while view:
                    view = view[os.write(fd, view):]
                if os.geteuid() == 0:  # else the caller's: proot shows it as the step's user
                    os.fchown(fd, m.uid, m.gid)
                os.fchmod(fd, 0o400 if m.mode is None else m.mode)
            finally:
                os.close(fd)
            binds.append((str(path), guest(stubs.ensure(m.target, is_dir=False))))
            continue
        if m.kind == "tmpfs":
            source = scratch / f"tmpfs-{n}"
            source.mkdir()
            source.chmod(0o1777 if m.mode is None else m.mode)
            binds.append((str(source), guest(stubs.ensure(m.target, is_dir=True))))
            continue
        assert m.source is not None
        if not m.source.exists():
            raise SandboxError(f"mount source {m.source} for {m.target} does not exist")
        source = m.source
        if m.readonly and not source.is_socket():
            source = _private_copy(source, scratch, n)
        is_dir = source.is_dir()
        binds.append((str(source), guest(stubs.ensure(m.target, is_dir=is_dir))))
    return binds


def _check_reachable(path: Path, spec: RunSpec) -> None:
    """A step that runs as another user reaches ``path`` by its host path (proot translates
    paths, the kernel checks them as that user): every directory above it must let the user
    search it. Refused with what to change, rather than failing inside the step."""
    user = spec.user
    if user.uid == 0 or os.geteuid() != 0:  # not root: the step runs as the caller itself
        return
    groups = {user.gid, *user.additional_gids}
    for parent in path.parents:
        try:
            st = parent.stat()
        except OSError:
            return
        if st.st_uid == user.uid:
            ok = bool(st.st_mode & 0o100)
        elif st.st_gid in groups:
            ok = bool(st.st_mode & 0o010)
        else:
            ok = bool(st.st_mode & 0o001)
        if not ok:
            raise SandboxError(
                f"with --isolation=chroot a RUN step as uid {user.uid} reaches {path} by its "
                f"host path, and {parent} (mode {st.st_mode & 0o7777:o}) does not let it",
                hint=f"let others search it (chmod o+x {parent}), or keep the store under a "
                     "searchable directory (/var/lib/cloche; docs/isolation.md)")


def _child_setup(spec: RunSpec) -> Callable[[], None] | None:
    """Rlimits for the step's process (as root, before the user is taken); None: none.
    Without a nofile ulimit the step gets the descriptor limit cloche started with."""
    limits = [(u.name, u.soft, u.hard) for u in spec.limits.ulimits]
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    if "nofile" not in {name for name, _, _ in limits} and nofile[0] != STARTING_NOFILE:
        limits.append(("nofile", STARTING_NOFILE, nofile[1]))  # plaintree raised the process's
    if not limits:
        return None

    def setup() -> None:
        for name, soft, hard in limits:
            which = getattr(resource, "RLIMIT_" + name.upper(), None)
            if which is None:
                continue

            def value(v: int) -> int:
                return resource.RLIM_INFINITY if v == UNLIMITED else v

            resource.setrlimit(which, (value(soft), value(hard)))
    return setup


def run_chroot(spec: RunSpec) -> RunResult:
    """Run ``spec.argv`` under proot with ``spec.rootfs`` as its root; wait for it to end.

    Raises SandboxError when the step cannot be set up; a failing command is a result."""
    proot = find_proot()
    if spec.security == "insecure":
        raise SandboxError("RUN --security=insecure cannot be honoured with "
                           "--isolation=chroot", hint="use --isolation=namespaces")
    if spec.network == "none":
        raise SandboxError("RUN --network=none cannot be enforced with --isolation=chroot: "
                           "the step shares the container's network")
    if not spec.rootfs.is_dir():
        raise SandboxError(f"root filesystem {spec.rootfs} is not a directory")
    spec = dataclasses.replace(spec, rootfs=spec.rootfs.resolve(), mounts=tuple(
        dataclasses.replace(m, source=m.source.resolve()) if m.source else m for m in spec.mounts))
    scratch = make_scratch("run", spec.scratch)
    scratch.chmod(0o711)  # the step's user reaches its binds (hosts, secrets) by path
    stubs = Stubs(spec.rootfs)
    proc: _GroupProcess | None = None
    pumps: list[threading.Thread] = []
    failures: list[BaseException] = []
    scope = spec.cancel or CancelScope()
    key = 0
    timed_out = False
    signalled: _Signalled | None = None
    try:
        _ensure_cwd(spec)
        binds = _binds(spec, stubs, scratch)
        for where in (spec.rootfs, *(Path(host) for host, _ in binds)):
            _check_reachable(where, spec)
        as_root = os.geteuid() == 0
        user = spec.user
        argv = [proot, "-r", str(spec.rootfs), "-w", spec.cwd]
        if not as_root:  # the caller's own files shown as the step user's, chown faked
            argv += ["-0"] if user.uid == 0 and user.gid == 0 else \
                ["-i", f"{user.uid}:{user.gid}"]
        for host, guest in binds:
            argv += ["-b", f"{host}:{guest}"]
        argv += list(spec.argv)
        env = dict(e.partition("=")[::2] for e in spec.final_env())
        stdout, stderr = spec.stdout, spec.stderr
        if callable(stderr):
            signalled = _Signalled(stderr)
            if stdout is stderr or stdout == stderr:
                stdout = signalled
            stderr = signalled
        out_target, err_target = _targets(stdout, stderr)
        proc = _GroupProcess(
            argv, stdin=subprocess.DEVNULL, stdout=out_target, stderr=err_target,
            start_new_session=True, env=env, cwd="/", umask=0o022,
            preexec_fn=_child_setup(spec),
            user=user.uid if as_root else None, group=user.gid if as_root else None,
            extra_groups=list(user.additional_gids) if as_root else None)
        for stream, sink in ((proc.stdout, stdout), (proc.stderr, stderr)):
            if stream is not None and callable(sink):
                t = threading.Thread(target=_pump, args=(stream, sink, failures), daemon=True,
                                     name="cloche-sandbox-output")
                t.start()
                pumps.append(t)
        key = id(proc)
        if scope._enter(key, proc, [-1]):
            proc.kill()
        try:
            proc.wait(spec.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            proc.wait()
        proc.kill()  # what is left of the group (processes that left proot's tracing)
        proc.wait_group()
        for t in pumps:
            t.join()
        if signalled is not None:
            signalled.finish()
    except BaseException:
        if proc is not None:
            proc.kill()
            proc.wait()
            proc.wait_group()
        for t in pumps:
            t.join()
        raise
    finally:
        was_cancelled = scope._leave(key)
        removed, parents = stubs.remove()
        rmtree(scratch, True)  # the secrets' files with it
    if was_cancelled:
        raise StepCancelled("the step was cancelled: the build was interrupted")
    if failures:
        raise failures[0]
    if timed_out:
        return RunResult(137, 9, True, removed, parents)
    code = proc.returncode
    if code < 0:  # proot itself killed
        return RunResult(128 - code, -code, False, removed, parents)
    if code == 255 and signalled is not None and signalled.signal is not None:
        return RunResult(128 + signalled.signal, signalled.signal, False, removed, parents)
    return RunResult(code, None, False, removed, parents)


__all__ = ["PROOT_HINT", "SandboxSetupError", "find_proot", "run_chroot"]
