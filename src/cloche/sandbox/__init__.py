"""The sandbox for RUN steps, built from kernel features with no external runtime.

``users`` resolves USER and --chown values in a rootfs; ``overlay`` mounts a stage's layers;
``run`` executes one step in new namespaces. Everything here needs Linux; running steps needs root.
"""

from cloche.sandbox.users import (
    InvalidUserSpecError,
    ResolvedUser,
    UnknownUserError,
    resolve_chown,
    resolve_user,
)

__all__ = ["InvalidUserSpecError", "ResolvedUser", "UnknownUserError", "resolve_chown",
           "resolve_user"]
