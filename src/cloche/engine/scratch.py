"""What killed builds leave behind, found and removed at the start of a build and by prune.

A build keeps all its scratch in ``builds/build-<id>/`` under the store (base images being
extracted, heredoc scripts, the sandbox's files and mount points, bind copies), next to a
lock file ``build-<id>.lock`` it holds while it runs; its steps' cgroups are named after it
too. When the build dies, kill -9 included, the lock is free: ``sweep_stale`` removes the
folder, the lock and the cgroups of every such build, the scratch (``cloche-<what>-<pid>-*``)
of dead processes in ``builds/`` (the overlay driver's probe) and in $TMPDIR (the sandbox run
on its own), and what earlier versions of cloche left: plaintext secrets
in /dev/shm (``cloche-secret-*``; a secret is now never in a host file) and extractions
beside base images and step snapshots (``extracting-<pid>-*``, ``unpacking-<pid>-*``).
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

from cloche.fs.rmtree import rmtree
from cloche.sandbox.scratch import alive as _alive
from cloche.sandbox.scratch import sweep_tmp
from cloche.store import Store

LEGACY_SECRETS = Path("/dev/shm")
LEGACY_SECRET_PREFIX = "cloche-secret-"


def sweep_stale(store: Store, *, thorough: bool = False) -> None:
    """Remove the leftovers of dead builds and processes (see the module docstring);
    ``thorough`` (prune) also looks through every step snapshot."""
    from cloche.sandbox.cgroups import sweep_groups

    remove_stale_builds(store)
    sweep_tmp(store.builds_dir)  # a process's own scratch there (the overlay probe's), if dead
    sweep_groups()  # the cgroups of builds killed in other stores too
    sweep_tmp()
    remove_legacy_secrets()
    remove_legacy_extractions(store, steps=thorough)


_LEGACY_SCRATCH = re.compile(r"(extracting|unpacking)-(\d+)-\d+\Z")


def remove_legacy_extractions(store: Store, *, steps: bool) -> None:
    """``extracting-<pid>-<thread>`` beside a flattened base image, ``unpacking-<pid>-...``
    beside a step snapshot: where cloche before issue 9 extracted, left for good when killed.
    Removed when their process is gone."""
    areas = [store.snapshots_dir / "images"] + ([store.snapshots_dir / "steps"] if steps else [])
    for area in areas:
        try:
            folders = [e.path for e in os.scandir(area) if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for folder in folders:
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                match = _LEGACY_SCRATCH.match(name)
                if match is not None and not _alive(int(match.group(2))):
                    rmtree(os.path.join(folder, name), ignore_errors=True)


def remove_stale_builds(store: Store) -> list[str]:
    """The scratch folders of builds that were killed (their lock is free); returns their
    names. A folder without its lock file is stale too: a build takes its lock first."""
    builds = store.builds_dir
    removed: list[str] = []
    try:
        names = set(os.listdir(builds))
    except OSError:
        return removed
    for name in sorted(names):
        if name.endswith(".lock"):
            if _remove_if_dead(builds / name):
                removed.append(name[:-len(".lock")])
        elif name.startswith("build-") and f"{name}.lock" not in names:
            _forget_build(builds / name)
            removed.append(name)
    return removed


def _remove_if_dead(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its build runs
        _forget_build(lock.with_suffix(""))
        lock.unlink(missing_ok=True)  # last: a build verifies its lock is still linked
        return True
    finally:
        os.close(fd)


def _forget_build(folder: Path) -> None:
    from cloche.sandbox.cgroups import remove_build_groups

    rmtree(folder, ignore_errors=True)
    remove_build_groups(folder.name)


def remove_legacy_secrets(base: Path = LEGACY_SECRETS) -> None:
    """``/dev/shm/cloche-secret-*``: where cloche up to issue 9 held a step's secret, left
    there when the build was killed. Only directories of this user are removed."""
    try:
        entries = list(os.scandir(base))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(LEGACY_SECRET_PREFIX):
            continue
        try:
            if entry.is_dir(follow_symlinks=False) \
                    and entry.stat(follow_symlinks=False).st_uid == os.geteuid():
                rmtree(entry.path, ignore_errors=True)
        except OSError:
            continue
