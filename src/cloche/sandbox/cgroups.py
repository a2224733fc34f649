"""Control groups for RUN steps: the pids limit every step gets, and the limits a build asks.

Each step runs in a group of its own, ``<parent>/cloche/<build>/<step>``, that the runner
makes before the step's init starts (the init is moved in while it still waits for its
configuration, so every process of the step is born inside) and removes when the step ends.
The build's group goes with its workspace; the groups of a killed build are removed by the
next build's sweep of stale builds (engine/scratch.py).

Hosts differ, and both cgroup versions are used, each controller where the host has it:

- cgroup v2 (one hierarchy): the controllers are enabled down the path through each group's
  ``cgroup.subtree_control``. v2 forbids a group that holds processes from giving
  controllers to children, so ``<parent>`` is the hierarchy's root (as for Docker's
  containers), unless cloche runs in the root group itself.
- cgroup v1 (a hierarchy per controller; also hybrid hosts whose pids and memory are bound
  to v1 while /sys/fs/cgroup/unified is a v2 without them): ``<parent>`` is the group cloche
  runs in, so that limits set on cloche (a CI job's) keep holding for its steps.

A host without a controller (no cgroup file system, or read-only in a container) gets no
default limit; a limit asked for explicitly is then an error naming the flag.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cloche.errors import SandboxError
from cloche.rootless.identity import in_user_namespace
from cloche.sandbox.limits import Limits

BASE = "cloche"
CONTROLLERS = ("pids", "memory")
FLAGS = {"pids": "--pids-limit", "memory": "--memory"}


class CgroupError(SandboxError):
    """A limit that was asked for cannot be applied on this host."""


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy and the controllers cloche uses from it."""

    version: int
    base: Path  # <parent>/cloche
    controllers: frozenset[str]


@dataclass(frozen=True)
class Usage:
    """What the step ran into: the kernel's OOM killer, the pids limit (a fork refused)."""

    oom_killed: bool = False
    pids_refused: bool = False


def _mountinfo() -> list[tuple[str, str, str, str]]:
    """(root in the hierarchy, mount point, fs type, super options) of each cgroup mount."""
    out: list[tuple[str, str, str, str]] = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(rest) < 3 or not rest[0].startswith("cgroup"):
            continue
        out.append((_unescape(fields[3]), _unescape(fields[4]), rest[0], rest[2]))
    return out


def _unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text


def _own_groups() -> dict[str, str]:
    """The process's group per v1 controller, and under "" its v2 group."""
    groups: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return groups
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for name in parts[1].split(",") if parts[1] else [""]:
            groups.setdefault(name, parts[2])
    return groups


def _under(point: str, root: str, group: str) -> Path | None:
    """The directory of ``group`` in a hierarchy mounted at ``point`` (showing ``root``)."""
    rel = os.path.relpath(group, root)
    if rel.startswith(".."):
        return None  # our group is not visible through this mount
    return Path(point) / rel if rel != "." else Path(point)


@functools.lru_cache(maxsize=1)
def hierarchies() -> tuple[Hierarchy, ...]:
    """The hierarchies that provide the controllers cloche uses, found once per process."""
    own = _own_groups()
    found: list[Hierarchy] = []
    taken: set[str] = set()
    for root, point, fstype, options in _mountinfo():
        if fstype == "cgroup":
            names = frozenset(options.split(",")) & frozenset(CONTROLLERS) - taken
            group = own.get(next(iter(names)), "/") if names else "/"
            parent = _under(point, root, group) if names else None
            if parent is not None and os.access(parent, os.W_OK):
                found.append(Hierarchy(1, parent / BASE, names))
                taken |= names
        elif fstype == "cgroup2":
            parent = Path(point)  # the root: see the module docstring
            names = _read_words(parent / "cgroup.controllers") & frozenset(CONTROLLERS) \
                - taken
            if names and os.access(parent, os.W_OK):
                found.append(Hierarchy(2, parent / BASE, names))
                taken |= names
    return tuple(found)


def _read_words(path: Path) -> frozenset[str]:
    try:
        return frozenset(path.read_text().split())
    except OSError:
        return frozenset()


def _make(hierarchy: Hierarchy, path: Path) -> None:
    """Create ``path`` below the hierarchy's base, the groups on the way included, giving
    each of them (v2) the controllers its children need."""
    parts = path.relative_to(hierarchy.base).parts
    chain = [hierarchy.base.joinpath(*parts[:i]) for i in range(len(parts))]  # base, build
    for attempt in range(3):
        try:
            for group in chain:
                with contextlib.suppress(FileExistsError):
                    group.mkdir()
            if hierarchy.version == 2:
                for group in [hierarchy.base.parent, *chain]:
                    _enable(group, hierarchy.controllers)
            path.mkdir()
            return
        except FileNotFoundError:
            if attempt == 2:  # a sweep removed an empty group on the way meanwhile: again
                raise


def _enable(group: Path, controllers: frozenset[str]) -> None:
    missing = controllers - _read_words(group / "cgroup.subtree_control")
    if missing:
        (group / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(missing)))


class StepGroup:
    """The cgroup(s) of one step: one directory per hierarchy used."""

    def __init__(self, dirs: list[tuple[Hierarchy, Path]]) -> None:
        self.dirs = dirs

    @classmethod
    def create(cls, build: str | None, limits: Limits) -> StepGroup | None:
        """The step's group with ``limits`` set; None when it needs none or the host has no
        cgroups for a default limit. Raises CgroupError for a limit asked for explicitly
        that the host cannot apply."""
        wanted = limits.controllers()
        if not wanted:
            return None
        require(limits)
        usable = [h for h in hierarchies() if h.controllers & wanted]
        name = f"step-{uuid.uuid4().hex[:12]}"
        group = cls([])
        try:
            for h in usable:
                path = h.base / build / name if build else h.base / name
                _make(h, path)
                group.dirs.append((h, path))
                _set_limits(h, path, limits)
        except OSError as err:
            group.remove()
            asked = sorted(limits.required & wanted)
            if asked:
                raise CgroupError(f"{FLAGS[asked[0]]}: cannot set up the step's cgroup: "
                                  f"{err.strerror or err} ({err.filename})") from None
            return None  # a default limit only: the host does not let us, run without
        return group

    def add(self, pid: int) -> None:
        """Move process ``pid`` (the step's init, before it forks) into the group."""
        for _, path in self.dirs:
            try:
                (path / "cgroup.procs").write_text(str(pid))
            except OSError as err:
                raise CgroupError(f"cannot move the step into its cgroup {path}: "
                                  f"{err.strerror or err}") from None

    def usage(self) -> Usage:
        oom = refused = False
        for h, path in self.dirs:
            if "memory" in h.controllers:
                events = path / ("memory.events" if h.version == 2 else "memory.oom_control")
                oom = oom or _counter(events, "oom_kill") > 0
            if "pids" in h.controllers:
                refused = refused or _counter(path / "pids.events", "max") > 0
        return Usage(oom, refused)

    def remove(self) -> None:
        """Remove the group once its processes are gone (killing any that linger)."""
        for h, path in self.dirs:
            if _remove(path, h.version) and path.parent == h.base:
                with contextlib.suppress(OSError):
                    h.base.rmdir()  # a step run on its own: the base too, unless in use


def unavailable(limits: Limits) -> frozenset[str]:
    """The controllers ``limits`` need that no writable hierarchy gives cloche: their limits
    are not applied (a default one) or refused (one asked for, see ``require``)."""
    have = frozenset().union(*(h.controllers for h in hierarchies()))
    return limits.controllers() - have


def require(limits: Limits) -> None:
    """Raise CgroupError when a limit asked for explicitly needs a controller this host does
    not give cloche (a build checks this before its first step)."""
    needed = sorted(unavailable(limits) & limits.required)
    if needed and in_user_namespace():
        raise CgroupError(
            f"{FLAGS[needed[0]]} needs the cgroup {needed[0]} controller, and a build without "
            "root has no writable cgroup here (the host's cgroup tree belongs to root)",
            hint="drop the flag, or run the build as root (docs/rootless.md)")
    if needed:
        raise CgroupError(
            f"{FLAGS[needed[0]]} needs the cgroup {needed[0]} controller, which this host "
            "does not provide to cloche (no writable cgroup2 or v1 hierarchy with it)",
            hint="run where /sys/fs/cgroup is writable by root with that controller, or drop "
                 "the flag")


def _set_limits(h: Hierarchy, path: Path, limits: Limits) -> None:
    if "pids" in h.controllers and limits.pids is not None:
        (path / "pids.max").write_text(str(limits.pids))
    if "memory" in h.controllers and limits.memory is not None:
        if h.version == 2:
            (path / "memory.max").write_text(str(limits.memory))
            swap = [("memory.swap.max", limits.memory)]  # docker: swap as much as memory
        else:
            (path / "memory.limit_in_bytes").write_text(str(limits.memory))
            swap = [("memory.memsw.limit_in_bytes", 2 * limits.memory)]
        for name, value in swap:
            with contextlib.suppress(OSError):  # no swap accounting: memory alone
                (path / name).write_text(str(value))


def _counter(path: Path, key: str) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def _procs(path: Path) -> list[int]:
    try:
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _remove(path: Path, version: int, patience: float = 5.0) -> bool:
    """rmdir the group once its processes are gone: they die with the step's PID namespace,
    a moment after its PID 1 (v2 kills what remains with cgroup.kill). False when it could
    not be removed (the sweep of stale builds tries again)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
        if version == 2:
            with contextlib.suppress(OSError):
                (path / "cgroup.kill").write_text("1")
        time.sleep(0.01)


def remove_build_groups(build: str) -> None:
    """Remove the (empty) groups of the build named ``build`` and, when no other build uses
    it, cloche's base group, in every hierarchy."""
    for h in hierarchies():
        folder = h.base / build
        try:
            steps = [p for p in folder.iterdir() if p.is_dir()]
        except OSError:
            steps = []
        for step in steps:
            _remove(step, h.version, patience=1.0)
        for group in (folder, h.base):
            try:
                group.rmdir()
            except OSError:
                break  # in use (or already gone): leave it


STALE_AGE = 60.0  # seconds a step's group may be empty: its init joins it at once


def sweep_groups(max_age: float = STALE_AGE) -> None:
    """Remove the groups that killed builds left, whatever store they used: step groups
    without a process for ``max_age`` (a step's init is moved in the moment its group is
    made), then build groups and the base left empty (a live build makes them again)."""
    now = time.time()
    for h in hierarchies():
        try:
            builds = [p for p in h.base.iterdir() if p.is_dir()]
        except OSError:
            continue
        for build in builds:
            try:
                steps = [build] if build.name.startswith("step-") else \
                    [p for p in build.iterdir() if p.is_dir()]
            except OSError:
                continue
            for step in steps:
                with contextlib.suppress(OSError):
                    if not _procs(step) and now - step.stat().st_mtime > max_age:
                        step.rmdir()
            if build.name.startswith("step-"):
                continue  # a step run on its own: only the age rule above may remove it (a
                # fresh group is empty until its step's init joins it)
            with contextlib.suppress(OSError):
                build.rmdir()
        with contextlib.suppress(OSError):
            h.base.rmdir()
