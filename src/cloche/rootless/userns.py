"""Enter a user namespace where the caller is root: what ``cloche build`` does when not root.

The process that needs it (the CLI, early, before any thread starts) calls ``enter()``; it
then goes on as root of a new user namespace with a mount namespace of its own, exactly as
a root build runs, with no second copy of cloche:

1. it forks a helper, then unshares its user and mount namespaces (it must be the only
   thread for that);
2. the helper, still outside with the caller's credentials, writes the process's maps with
   the setuid ``newuidmap``/``newgidmap`` (Debian's ``uidmap``): 0 to the caller, 1 and up
   to the caller's subordinate ranges (``cloche.rootless.idmap``), and exits;
3. the process becomes uid and gid 0 there, makes its mounts private (nothing it mounts
   reaches the host's namespace) and records the caller in ``$CLOCHE_ROOTLESS``
   (``cloche.rootless.identity``).

Inside, chown to any mapped id works (a layer's uid 1000 is stored as the host's subordinate
id 100999 and read back as 1000, so layers are byte for byte those of a root build), as do
overlayfs (Linux 5.11 and later), the sandbox's nested namespaces and slirp4netns. What the
host does not allow is refused with an error that says what to change (RootlessError).
"""

from __future__ import annotations

import ctypes
import errno
import os
import pwd
import shutil
import subprocess
import threading

from cloche.rootless.identity import ENV, caller
from cloche.rootless.idmap import SUBGID, SUBUID, IdMap, RootlessError, id_map

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
TOOL_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin")


def enter() -> bool:
    """Enter a user namespace as its root unless the process is root already; True when it
    entered one. Must run before the process starts a thread. Raises RootlessError."""
    if os.geteuid() == 0:
        return False
    uid, gid = os.getuid(), os.getgid()
    try:
        user = pwd.getpwuid(uid).pw_name
        home = pwd.getpwuid(uid).pw_dir
    except KeyError:
        user, home = str(uid), ""
    uid_map = id_map(SUBUID, user, uid, "uid")
    gid_map = id_map(SUBGID, user, gid, "gid")
    tools = [_tool("newuidmap"), _tool("newgidmap")]
    if threading.active_count() > 1 or _threads() > 1:
        raise RootlessError("cannot enter a user namespace: the process already runs threads",
                            hint="call cloche.enter_rootless() before the program starts "
                                 "threads (see docs/rootless.md)")
    if home and "HOME" not in os.environ:
        os.environ["HOME"] = home  # inside, the passwd entry of uid 0 would say /root
    _unshare_and_map(uid_map, gid_map, tools)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    try:
        os.setgroups([])  # the caller's other groups are unmapped inside (nobody)
    except OSError:
        pass  # setgroups denied in this namespace: they stay, shown as 65534
    _libc_check(_libc().mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    os.environ[ENV] = f"{uid}:{gid}"
    if caller() != (uid, gid):
        raise RootlessError("the user namespace was made but uid 0 is not the caller in it")
    return True


_ALLOWED: list[bool] = []


def userns_allowed() -> bool:
    """Whether the kernel lets this process make a user namespace at all (probed once, in a
    forked child that only calls unshare): false where seccomp (a container's default
    profile) or a sysctl refuses it. Subordinate ranges are not looked at."""
    if not _ALLOWED:
        pid = os.fork()
        if pid == 0:  # the child: try, and say by its status
            code = 1
            try:
                code = 0 if _libc().unshare(CLONE_NEWUSER) == 0 else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        _ALLOWED.append(os.waitstatus_to_exitcode(status) == 0)
    return _ALLOWED[0]


def _tool(name: str) -> str:
    found = shutil.which(name) or next(
        (p for d in TOOL_DIRS if os.access(p := os.path.join(d, name), os.X_OK)), None)
    if found is None:
        raise RootlessError(
            f"building without root needs {name}, which is not installed",
            hint="install it as root: apt-get install uidmap (Debian, Ubuntu), "
                 "dnf install shadow-utils (Fedora)")
    return found


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _unshare_and_map(uid_map: IdMap, gid_map: IdMap, tools: list[str]) -> None:
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the helper: outside, as the caller
        os.close(go_w)
        os.close(out_r)
        code = 1
        try:
            if os.read(go_r, 1) == b"1":
                code = _write_maps(os.getppid(), uid_map, gid_map, tools, out_w)
            else:
                code = 0
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(out_w)
    try:
        try:
            _libc_check(_libc().unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare")
        except OSError as err:
            os.write(go_w, b"0")
            raise _unshare_error(err) from None
        os.write(go_w, b"1")
        report = b""
        while chunk := os.read(out_r, 4096):
            report += chunk
    finally:
        os.close(go_w)
        os.close(out_r)
        _, status = os.waitpid(pid, 0)
    if status != 0 or report:
        text = report.decode(errors="replace").strip() or f"status {status}"
        raise RootlessError(
            f"cannot map the subordinate ids into the user namespace: {text}",
            hint=f"check the user's lines in {SUBUID} and {SUBGID}, and that newuidmap and "
                 "newgidmap are setuid root (ls -l /usr/bin/newuidmap; reinstall uidmap)")


def _write_maps(pid: int, uid_map: IdMap, gid_map: IdMap, tools: list[str], out: int) -> int:
    for tool, idmap in zip(tools, (uid_map, gid_map)):
        try:
            done = subprocess.run([tool, str(pid), *idmap.args()], stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError) as err:
            os.write(out, f"{tool}: {err}".encode())
            return 1
        if done.returncode != 0:
            text = (done.stderr or done.stdout).decode(errors="replace").strip()
            os.write(out, f"{text or os.path.basename(tool)} (exit {done.returncode})".encode())
            return 1
    return 0


def _unshare_error(err: OSError) -> RootlessError:
    """Why the kernel refused a user namespace, and the setting that allows it."""
    settings = []
    for path, bad in (("/proc/sys/user/max_user_namespaces", "0"),
                      ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
                      ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1")):
        try:
            with open(path, encoding="ascii") as f:
                if f.read().strip() == bad:
                    settings.append(path)
        except OSError:
            pass
    if settings:
        names = ", ".join(p.removeprefix("/proc/sys/").replace("/", ".") + f" = {_bad(p)}"
                          for p in settings)
        hint = f"as root, allow them: sysctl -w {_allow(settings[0])}"
        return RootlessError(f"user namespaces are disabled on this host ({names})", hint=hint)
    if err.errno in (errno.EPERM, errno.ENOSPC, errno.EINVAL, errno.EUSERS):
        return RootlessError(
            f"the kernel refused a user namespace: {err.strerror}",
            hint="user namespaces may be disabled (sysctl user.max_user_namespaces, "
                 "kernel.unprivileged_userns_clone) or blocked by seccomp in a container; "
                 "run cloche as root there (see docs/rootless.md)")
    return RootlessError(f"cannot create a user namespace: {err.strerror}")


def _bad(path: str) -> str:
    return "1" if path.endswith("apparmor_restrict_unprivileged_userns") else "0"


def _allow(path: str) -> str:
    name = path.removeprefix("/proc/sys/").replace("/", ".")
    if name == "user.max_user_namespaces":
        return f"{name}=15000"
    return f"{name}={'0' if _bad(path) == '1' else '1'}"


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.unshare.argtypes = [ctypes.c_int]
        lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                              ctypes.c_ulong, ctypes.c_char_p]
        _LIBC = lib
    return _LIBC


def _libc_check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
