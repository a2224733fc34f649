"""Scratch directories of the sandbox, made where a later sweep can tell they are stale.

A step needs a few host directories for its lifetime (the generated /etc/hosts and
/etc/resolv.conf, overlay mount points). A build gives the sandbox a directory of its own
under the store (``builds/build-*``), which the stale-build sweep removes once the build is
dead, kill -9 included. Used on its own (no such directory given), the sandbox makes them in
$TMPDIR under a name that holds its PID, ``cloche-<what>-<pid>-<random>``, and
``sweep_tmp`` removes those whose process is gone. Versions before issue 9 made them in
$TMPDIR without a PID (``cloche-run-<random>``, ``cloche-heredoc-...``); those are removed
once a day old, when no build can still be using them.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

from cloche.fs.rmtree import rmtree

_OWNED = re.compile(r"cloche-[a-z]+-(\d+)-[A-Za-z0-9_]+\Z")
_LEGACY = re.compile(r"cloche-(run|heredoc|empty|lower|context)-[a-z0-9_]{8}\Z")
LEGACY_AGE = 24 * 3600.0


def make_scratch(what: str, where: Path | None = None) -> Path:
    """A new private directory in ``where``, else in $TMPDIR, named with this process's PID
    (``cloche-<what>-<pid>-<random>``) so that ``sweep_tmp`` of its parent finds it stale
    once the process is gone."""
    return Path(tempfile.mkdtemp(prefix=f"cloche-{what}-{os.getpid()}-", dir=where))


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a reused PID counts: nothing is removed then)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def sweep_tmp(tmp: Path | None = None) -> list[Path]:
    """Remove the $TMPDIR scratch directories (ours, by name and owner) of dead processes;
    returns what was removed."""
    base = Path(tmp or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _OWNED.match(entry.name)
        legacy = match is None and _LEGACY.match(entry.name) is not None
        if not legacy and (match is None or alive(int(match.group(1)))):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if legacy and now - st.st_mtime < LEGACY_AGE:
            continue
        if not entry.is_dir(follow_symlinks=False) or st.st_uid != os.geteuid():
            continue  # not a directory this user made: not ours to remove
        rmtree(entry.path, True)
        removed.append(Path(entry.path))
    return removed
