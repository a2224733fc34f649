"""Finding a test's processes on the host by their exact command line."""

from __future__ import annotations

import os


def pids_of(command: str) -> list[int]:
    """PIDs of the processes whose command line is exactly ``command``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().replace(b"\0", b" ").strip() == command.encode():
                    found.append(int(pid))
        except OSError:
            continue  # a process that ended meanwhile
    return found
