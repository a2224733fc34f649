"""The resources a RUN step may use: processes, memory, rlimits and the size of /dev/shm.

Values only (the init process imports nothing else of the caller's side): ``cgroups.py``
applies ``pids`` and ``memory`` through the step's cgroup, the init applies ``ulimits`` with
setrlimit just before exec and mounts /dev/shm with ``shm_size``.

Defaults: 4096 processes per step, so that a fork bomb in a Dockerfile fails in its step
instead of filling the host's PID space (32768 on many hosts) and taking it down; Docker and
BuildKit set none. Memory is unlimited by default, as with Docker: what a compiler or a
linker needs depends on the project and the host, no default would fit, and the host's OOM
killer still protects the host. /dev/shm is 64 MiB, as under Docker.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

DEFAULT_PIDS_LIMIT = 4096
DEFAULT_SHM_SIZE = 64 * 1024 * 1024
UNLIMITED = -1  # a ulimit value without bound (RLIM_INFINITY)

# docker's --ulimit names (go-units ulimit.go) and the resource each one sets
ULIMIT_NAMES = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
                "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")


@dataclass(frozen=True)
class Ulimit:
    """One ``--ulimit NAME=SOFT[:HARD]``; -1 is unlimited."""

    name: str
    soft: int
    hard: int

    def __str__(self) -> str:
        return f"{self.name}={self.soft}:{self.hard}"


@dataclass(frozen=True)
class Limits:
    """What one step may use. ``pids`` and ``memory`` (bytes) are None for no limit;
    ``required`` names the cgroup controllers whose limit was asked for explicitly: a host
    without them is an error then, while a default limit is only applied where possible."""

    pids: int | None = DEFAULT_PIDS_LIMIT
    memory: int | None = None
    ulimits: tuple[Ulimit, ...] = ()
    shm_size: int = DEFAULT_SHM_SIZE
    required: frozenset[str] = frozenset()

    def controllers(self) -> frozenset[str]:
        """The cgroup controllers these limits need."""
        wanted = set()
        if self.pids is not None:
            wanted.add("pids")
        if self.memory is not None:
            wanted.add("memory")
        return frozenset(wanted)


def human_bytes(size: int) -> str:
    """``67108864`` as ``64MiB``, for messages about limits given in binary units."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B"


# The descriptor limit cloche started with: the chroot mode's workspace raises the process's
# soft limit (engine/plaintree.py holds a descriptor per directory during a step) and gives a
# RUN step this one back (sandbox/chroot.py).
STARTING_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_nofile_limit() -> None:
    """The soft descriptor limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
