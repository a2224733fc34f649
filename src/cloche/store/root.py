"""Where the store lives when the caller does not say.

The order follows what users of other daemonless tools expect: an explicit ``root`` argument
(the CLI's ``--root``), then ``$CLOCHE_ROOT``, then ``/var/lib/cloche`` when running as root
(like /var/lib/containers), else ``$XDG_DATA_HOME/cloche`` (``~/.local/share/cloche``). A user's
build runs as root of a user namespace (cloche.rootless) and keeps the user's store.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from cloche.rootless.identity import host_root

SYSTEM_ROOT = Path("/var/lib/cloche")
PRIVATE_MODE = 0o700


def default_root() -> Path:
    """The store root to use when none is given."""
    env = os.environ.get("CLOCHE_ROOT")
    if env:
        return Path(env).expanduser()
    if host_root():  # not root of cloche's user namespace: that is the user's build
        return SYSTEM_ROOT
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "cloche"


def not_a_store(root: Path) -> str | None:
    """Why ``root`` is not an existing store (None when it is one). Operations that only read
    or change what is stored check this first, so that a mistyped root fails with its path
    instead of quietly becoming a new, empty store."""
    if (root / "oci-layout").is_file():
        return None
    return "does not exist" if not root.exists() else "is not a cloche store (no oci-layout)"


def make_private(root: Path, areas: Iterable[Path]) -> None:
    """Create the store root and its engine ``areas`` owner-only, tightening older ones.

    The store holds flattened images with their setuid files and device nodes, and RUN cache
    mounts: a local user who can traverse to them runs a pulled image's setuid binary as root.
    The root is made 0700 (BuildKit's /var/lib/buildkit is too) when cloche creates it, when it
    is a store, or when it is an empty folder; a non-empty folder that is not a store is the
    caller's own (``--root ~/shared``), so its mode stays and only the areas below it, which
    hold the trees, are made 0700 (always, whatever the root).
    """
    try:
        root.mkdir(mode=PRIVATE_MODE)
    except FileExistsError:
        pass
    except FileNotFoundError:  # missing parents get the usual modes, the root itself is private
        root.parent.mkdir(parents=True, exist_ok=True)
        root.mkdir(mode=PRIVATE_MODE, exist_ok=True)
    with os.scandir(root) as entries:
        empty = next(entries, None) is None
    if empty or (root / "oci-layout").exists():
        _tighten(root)
    for area in areas:
        area.mkdir(mode=PRIVATE_MODE, exist_ok=True)
        _tighten(area)


def _tighten(path: Path) -> None:
    """Drop the group and other bits of ``path`` (a store someone else owns is left alone)."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        try:
            os.chmod(path, mode & ~0o077)
        except PermissionError:
            pass
