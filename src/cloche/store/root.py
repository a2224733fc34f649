"""Where the store lives when the caller does not say.

The order follows what users of other daemonless tools expect: an explicit ``root`` argument
(the CLI's ``--root``), then ``$CLOCHE_ROOT``, then ``/var/lib/cloche`` when running as root
(like /var/lib/containers), else ``$XDG_DATA_HOME/cloche`` (``~/.local/share/cloche``).
"""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_ROOT = Path("/var/lib/cloche")


def default_root() -> Path:
    """The store root to use when none is given."""
    env = os.environ.get("CLOCHE_ROOT")
    if env:
        return Path(env).expanduser()
    if os.geteuid() == 0:
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
