"""The last confinement of a step's process, just before it drops its user and execs.

Three things runc does for every BuildKit RUN, in this order (the seccomp filter last: it
forbids the calls the first two make):

- a fresh, anonymous session keyring, so that the step does not inherit the keys of the
  caller's session (runc joins a new session keyring for every container);
- a private cgroup namespace (BuildKit asks for one on every RUN), so that /proc/self/cgroup
  shows the step's own group as ``/`` instead of the host's cgroup paths;
- unless the step is ``--security=insecure``: Docker's default seccomp profile for the
  step's capabilities (``seccomp.py``). This needs CAP_SYS_ADMIN or no_new_privs, and the
  process is still root here: BuildKit does not set no_new_privs (setuid programs such as
  sudo work in a RUN), so neither does cloche.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

from cloche.sandbox import linux, seccomp, syscall_tables

CLONE_NEWCGROUP = 0x02000000
KEYCTL_JOIN_SESSION_KEYRING = 1
_TABLES = {"x86_64": syscall_tables.X86_64, "aarch64": syscall_tables.AARCH64,
           "arm64": syscall_tables.AARCH64}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def join_new_session_keyring() -> None:
    """keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL): a new anonymous session keyring."""
    table = _TABLES.get(platform.machine())
    if table is None:
        return  # no number known; the seccomp filter refuses this machine anyway
    result = _libc.syscall(ctypes.c_long(table["keyctl"]),
                           ctypes.c_long(KEYCTL_JOIN_SESSION_KEYRING), ctypes.c_void_p(None))
    if result < 0:
        err = ctypes.get_errno()
        # ENOSYS: a kernel without keys. EPERM: cloche itself runs under a filter that
        # refuses keyctl (nested in a container), which the step inherits: no keys either way.
        if err not in (errno.ENOSYS, errno.EPERM):
            raise OSError(err, f"new session keyring: {os.strerror(err)}")


def private_cgroup_namespace() -> None:
    """unshare(CLONE_NEWCGROUP), where the kernel has cgroup namespaces."""
    if os.path.exists("/proc/self/ns/cgroup"):
        linux.unshare(CLONE_NEWCGROUP)


def enter(*, insecure: bool, caps: frozenset[int]) -> None:
    """Confine the calling process as the step's command will run; raise on failure."""
    join_new_session_keyring()
    private_cgroup_namespace()
    if not insecure:
        seccomp.install(seccomp.default_filter(caps))
