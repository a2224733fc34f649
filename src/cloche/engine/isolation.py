"""How RUN steps are isolated: ``namespaces`` (the default) or ``chroot`` (docs/isolation.md).

``namespaces`` gives each stage thread a mount namespace, each step an overlayfs and each RUN
a sandbox of its own namespaces (sandbox/runner.py). Inside an unprivileged container (the
runtime's default capabilities and seccomp profile) none of that may be created: unshare and
mount fail with EPERM. ``chroot`` then keeps a stage's root filesystem as a plain directory
(engine/plaintree.py) and runs a RUN under proot, which gives the command that directory as
its root by translating paths (sandbox/chroot.py), with no mount and no namespace. ``auto``
picks ``namespaces`` when this process can create a mount namespace (a user who is not root:
a user namespace, rootless mode), else ``chroot``. As a user without a user namespace,
``chroot`` cannot chown: owners are recorded in xattrs (cloche.fs.owners).
"""

from __future__ import annotations

import os
import threading

from cloche.errors import ConfigError

ISOLATION_MODES = ("auto", "namespaces", "chroot")

# said once, at the start of a build in chroot mode
CHROOT_WARNING = (
    "isolation=chroot: RUN steps share this container's network, devices (/dev), /proc, "
    "/sys and processes, and get no seccomp filter, cgroup limits or namespaces of cloche's "
    "own; the container is the boundary (docs/isolation.md)")


def nonroot_warning(uid: int) -> str:
    """Said once too when chroot mode runs as a user who is not root (no user namespace)."""
    return (f"isolation=chroot as uid {uid} (not root, no user namespace): owners are "
            "recorded in xattrs; chown and chgrp in RUN are not kept (a step's new files are "
            "its user's), device nodes are left out, symlinks are owned by 0:0, and RUN's "
            f"permission checks are uid {uid}'s (docs/isolation.md)")


_probe_lock = threading.Lock()
_probed: list[bool] = []


def can_unshare_mounts() -> bool:
    """Whether this process may create a mount namespace (probed once, in a forked child,
    so that this process's own namespaces stay as they are)."""
    with _probe_lock:
        if not _probed:
            _probed.append(_probe())
        return _probed[0]


def _probe() -> bool:
    from cloche.sandbox import linux

    pid = os.fork()
    if pid == 0:  # the child: try, and say by its status; never returns into Python code
        code = 1
        try:
            linux.unshare(linux.CLONE_NEWNS)
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
            code = 0
        except BaseException:  # noqa: BLE001 - any failure means no
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def in_container() -> bool:
    """Whether this process runs in a container (Docker's and Podman's marker files)."""
    return os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")


def resolve(requested: str) -> str:
    """The mode a build runs in: ``requested`` unless it is ``auto``."""
    if requested not in ISOLATION_MODES:
        raise ConfigError(f"--isolation {requested!r}: want one of {', '.join(ISOLATION_MODES)}")
    if requested != "auto":
        return requested
    if os.geteuid() != 0:  # a user: namespaces when it may make a user namespace (rootless)
        from cloche.rootless.userns import userns_allowed

        return "namespaces" if userns_allowed() else "chroot"
    return "namespaces" if can_unshare_mounts() else "chroot"


def check_chroot_options(network: str, allow: tuple[str, ...], memory: int | None,
                         pids_limit: int | None) -> None:
    """Refuse what chroot mode cannot do, naming the flag and the mode."""
    if network == "none":
        raise ConfigError("--network=none cannot be enforced with --isolation=chroot: a RUN "
                          "step shares the container's network there",
                          hint="drop --network=none, or build where cloche may create "
                               "namespaces (--isolation=namespaces; docs/isolation.md)")
    if "security.insecure" in allow:
        raise ConfigError("--allow security.insecure has no meaning with --isolation=chroot: "
                          "RUN steps get the container's privileges, no more",
                          hint="drop it, or use --isolation=namespaces (docs/isolation.md)")
    for flag, given in (("--memory", memory), ("--pids-limit", pids_limit)):
        if given is not None:
            raise ConfigError(f"{flag} cannot be enforced with --isolation=chroot: cloche "
                              "makes no cgroup there",
                              hint="limit the container itself (docker run --memory, "
                                   "--pids-limit), or use --isolation=namespaces")
