"""The sandbox for RUN steps, built from kernel features with no external runtime.

``users`` resolves USER and --chown values in a rootfs; ``overlay`` mounts a stage's layers
so that the upper directory is the step's diff; ``runner.run`` executes one step in new
mount, PID, UTS and IPC namespaces (and network, for ``--network=none``) over the merged
directory. Running steps needs root for now.
"""

from cloche.sandbox.overlay import OverlayError, mount_overlay, prune_copied_up
from cloche.sandbox.paths import resolve_in_root
from cloche.sandbox.runner import SandboxSetupError, hosts_file, require_root, run
from cloche.sandbox.spec import DEFAULT_HOSTNAME, DEFAULT_PATH, Mount, RunResult, RunSpec, Sink
from cloche.sandbox.users import (
    InvalidUserSpecError,
    ResolvedUser,
    UnknownUserError,
    resolve_chown,
    resolve_user,
)

__all__ = [
    "DEFAULT_HOSTNAME", "DEFAULT_PATH", "InvalidUserSpecError", "Mount", "OverlayError",
    "ResolvedUser", "RunResult", "RunSpec", "SandboxSetupError", "Sink", "UnknownUserError",
    "hosts_file", "mount_overlay", "prune_copied_up", "require_root", "resolve_chown", "resolve_in_root",
    "resolve_user", "run",
]
