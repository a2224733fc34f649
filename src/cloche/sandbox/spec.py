"""The values that describe one RUN step in the sandbox and what came out of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

from cloche.errors import SandboxError
from cloche.fs.users import ROOT, ResolvedUser
from cloche.sandbox.cancel import CancelScope
from cloche.sandbox.limits import Limits

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_HOSTNAME = "buildkitsandbox"  # what BuildKit's RUN steps see
NETWORKS = ("default", "host", "none")
SECURITY_MODES = ("sandbox", "insecure")

# Where a stream of the step goes: a callback given each chunk as the process writes it
# (called from a reader thread, one per stream: a callback shared by stdout and stderr must
# be thread-safe), a file descriptor the process writes to directly, or None to discard it.
# The same callback for both streams gets them as one pipe, in the order the step wrote them.
Sink = Union[Callable[[bytes], None], int, None]


@dataclass(frozen=True)
class Mount:
    """An extra mount for the step (secrets, caches, ``RUN --mount=type=bind``...).

    ``kind`` is ``bind`` (``source`` is a host directory or file; the target stub takes the
    same type), ``tmpfs`` (``size`` in bytes, ``mode`` of its root) or ``secret`` (a read-only
    file holding ``data``, owned by ``uid``:``gid`` with ``mode``, that exists only in the
    step's own mount namespace: it is on no host file system, and goes when the step goes,
    kill -9 of cloche included). ``target`` is an absolute path inside the container.
    """

    target: str
    kind: Literal["bind", "tmpfs", "secret"] = "bind"
    source: Path | None = None
    readonly: bool = False
    size: int | None = None
    mode: int | None = None
    data: bytes | None = field(default=None, repr=False)  # a secret's value: never shown
    uid: int = 0
    gid: int = 0

    def __post_init__(self) -> None:
        if not self.target.startswith("/"):
            raise SandboxError(f"mount target {self.target!r} must be an absolute path")
        if self.kind == "bind" and self.source is None:
            raise SandboxError(f"bind mount on {self.target} needs a source")
        if self.kind == "secret" and self.data is None:
            raise SandboxError(f"secret mount on {self.target} needs its data")
        if self.kind not in ("bind", "tmpfs", "secret"):
            raise SandboxError(f"unknown mount type {self.kind!r} for {self.target}")


@dataclass(frozen=True)
class RunSpec:
    """One process to run in a new sandbox over an already mounted root filesystem.

    ``env`` is the exact environment (``K=V``); PATH defaults to Docker's and HOME to the
    user's home when absent. ``cwd`` is created when missing, as BuildKit does.
    """

    rootfs: Path
    argv: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: ResolvedUser = ROOT
    hostname: str = DEFAULT_HOSTNAME
    # "default": a network namespace of its own, wired out by slirp4netns (sandbox/network.py);
    # "none": loopback only; "host": the host's namespace (an entitlement: --allow network.host)
    network: str = "default"
    mounts: tuple[Mount, ...] = ()
    extra_hosts: tuple[tuple[str, str], ...] = ()  # (name, ip) lines added to /etc/hosts
    stdout: Sink = field(default=None, compare=False)
    stderr: Sink = field(default=None, compare=False)
    timeout: float | None = None
    init: bool = False  # True: a reaping init is PID 1, not the command (BuildKit: the command)
    # "insecure" (RUN --security=insecure): all capabilities, the host's device nodes,
    # writable /sys and /proc/sys, nothing masked; BuildKit's privileged spec.
    security: str = "sandbox"
    # the build's cancel scope: its cancel() ends this step, and a
    # step that starts after it is killed at once; None: the step has a scope of its own
    cancel: CancelScope | None = field(default=None, compare=False)
    # processes, memory, rlimits, /dev/shm (sandbox/limits.py); a pids limit by default
    limits: Limits = Limits()
    # the build the step belongs to: its cgroup is cloche/<cgroup>/<step> (sandbox/cgroups.py)
    cgroup: str | None = None
    # where the sandbox makes its host-side files: the build's folder, which the sweep of
    # stale builds removes if cloche is killed; None: $TMPDIR (sandbox/scratch.py)
    scratch: Path | None = None
    # network "default" only: slirp's 10.0.2.2 reaches the host's loopback (off: out of reach);
    # the engine sets it for a proxy build arg on the host's loopback (network.loopback_proxies)
    host_loopback: bool = False

    def __post_init__(self) -> None:
        if not self.argv:
            raise SandboxError("nothing to run: the command is empty")
        if self.network not in NETWORKS:
            raise SandboxError(f"unknown network mode {self.network!r}: use one of "
                               + ", ".join(NETWORKS))
        if self.security not in SECURITY_MODES:
            raise SandboxError(f"unknown security mode {self.security!r}: use one of "
                               + ", ".join(SECURITY_MODES))
        if not 0 < len(self.hostname.encode()) <= 64:
            raise SandboxError(f"hostname {self.hostname!r} must be 1 to 64 bytes")
        if not self.cwd.startswith("/"):
            raise SandboxError(f"working directory {self.cwd!r} must be an absolute path")

    def final_env(self) -> list[str]:
        """The environment the process gets: ``env`` plus PATH and HOME when missing."""
        env = list(self.env)
        names = {e.partition("=")[0] for e in env}
        if "PATH" not in names:
            env.append(f"PATH={DEFAULT_PATH}")
        if "HOME" not in names:
            env.append(f"HOME={self.user.home}")
        return env


@dataclass(frozen=True)
class RunResult:
    """How the step ended.

    ``exit_code`` is the command's status (128+N when killed by signal N, as a shell
    reports it); ``stubs`` lists the container paths the sandbox created as mount points
    and removed again, so that they are not in the layer. ``stub_parents`` are existing
    directories that held a stub and that the step left alone: an overlay copied them up
    only for the sandbox, so pass them to ``overlay.prune_copied_up`` after unmounting.
    """

    exit_code: int
    signal: int | None = None
    timed_out: bool = False
    stubs: tuple[str, ...] = ()
    stub_parents: tuple[str, ...] = ()
    oom_killed: bool = False  # the kernel killed a process of the step at its memory limit
    pids_refused: bool = False  # the step tried to fork beyond its pids limit

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out
