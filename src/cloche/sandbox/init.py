"""The sandbox's own process: new namespaces, the container's mounts, PID 1 and the command.

``runner.run`` starts this module in a fresh interpreter (``python -m cloche.sandbox.init``)
instead of forking the caller: the caller runs stages in threads, and a fork of a threaded
Python process may inherit a lock another thread held. The fresh process is single-threaded:

1. It reads its configuration (``initconfig.InitConfig``, typed and checked) from stdin,
   points stdin at /dev/null, and unshares the mount, UTS, IPC and PID namespaces (and the
   network one for ``--network=none``).
2. It forks PID 1 of the new PID namespace and waits for it. PID 1 dies with it (PDEATHSIG),
   and when PID 1 dies the kernel kills every process of the namespace: so killing this
   process (the runner does on timeout or Ctrl-C) leaves nothing running.
3. PID 1 makes every mount private, bind-mounts the rootfs, mounts /proc, /dev, /sys and the
   extra mounts, sets the hostname, brings up loopback, pivots into the rootfs, and execs the
   command (user dropped, capabilities limited to Docker's default set, exact env), which
   is then PID 1 as under BuildKit. With ``init`` it forks the command instead, reaps
   children until the command exits, and exits with the command's status.

The status descriptor gets ``pid1 N`` (its host PID) first, then the outcome as one line:
``exit N``, ``signal N`` or ``error TEXT``.
Nothing here may print to stdout/stderr except the command itself (and a failed exec, on
stderr, as a shell would report it).
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import stat
import struct
import sys
from fcntl import ioctl
from typing import Any

from cloche.sandbox import linux
from cloche.sandbox.initconfig import InitConfig, InitMount
from cloche.sandbox.linux import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
)

# Docker's default capability set (moby's oci/caps/defaults.go): the bounding set of RUN.
DEFAULT_CAPS = frozenset({0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31})
# CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW
# SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
SETUP_FAILED = 125


class _Failure(Exception):
    """A set-up step failed; the text goes to the status descriptor."""


def _report(fd: int, line: str) -> None:
    try:
        os.write(fd, (line.replace("\n", " ") + "\n").encode())
    except OSError:
        pass


def _step(what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except OSError as e:
        raise _Failure(f"{what}: {e.strerror or e}") from e


def _setup_dev(dev: str) -> None:
    """A /dev like runc's: a small tmpfs with the usual nodes, shm, pts, mqueue and links."""
    _step("mount /dev", linux.mount, "tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    for name in DEVICES:
        target = os.path.join(dev, name)
        host = os.stat(f"/dev/{name}")
        try:
            os.mknod(target, 0o666 | stat.S_IFCHR, host.st_rdev)
            os.chmod(target, 0o666)  # crw-rw-rw- root root, whatever the umask
        except OSError:
            # No mknod here (a restricted host): bind the host's node instead.
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o666))
            _step(f"bind /dev/{name}", linux.mount, f"/dev/{name}", target, None, MS_BIND)
    os.mkdir(os.path.join(dev, "shm"), 0o1777)
    _step("mount /dev/shm", linux.mount, "shm", os.path.join(dev, "shm"), "tmpfs",
          MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
    os.mkdir(os.path.join(dev, "pts"), 0o755)
    _step("mount /dev/pts", linux.mount, "devpts", os.path.join(dev, "pts"), "devpts",
          MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")
    os.mkdir(os.path.join(dev, "mqueue"), 0o755)
    try:
        linux.mount("mqueue", os.path.join(dev, "mqueue"), "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        os.rmdir(os.path.join(dev, "mqueue"))  # optional, as in runc's default spec
    links = {"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
             "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}
    for name, target in links.items():
        os.symlink(target, os.path.join(dev, name))


def _host_devices(dev: str) -> None:
    """``--security=insecure``: every host device node too, as BuildKit's privileged spec."""
    for dirpath, dirnames, filenames in os.walk("/dev"):
        rel = os.path.relpath(dirpath, "/dev")
        if rel == ".":
            dirnames[:] = [d for d in dirnames if d not in ("pts", "shm", "mqueue", "fd")]
        for name in filenames:
            host = os.path.join(dirpath, name)
            target = os.path.normpath(os.path.join(dev, rel, name))
            try:
                st = os.lstat(host)
                if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) \
                        or os.path.lexists(target):
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.mknod(target, st.st_mode, st.st_rdev)
                os.chown(target, st.st_uid, st.st_gid)
            except OSError:
                continue  # a node that vanished or cannot be made: not fatal


def _setup_sys(sys_dir: str, writable: bool = False) -> None:
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if writable else MS_RDONLY)
    try:
        linux.mount("sysfs", sys_dir, "sysfs", flags)
    except OSError:
        # A fresh sysfs can be refused (e.g. nested without a net namespace): use the host's.
        _step("bind /sys", linux.mount, "/sys", sys_dir, None, MS_BIND | MS_REC)
        if not writable:
            _step("remount /sys read-only", linux.mount, None, sys_dir, None,
                  MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _extra_mount(m: InitMount) -> None:
    target, name = m.target, m.path
    if not os.path.lexists(target):
        # The stub made in the rootfs is hidden by a tmpfs mounted since (/dev/pipes under the
        # /dev tmpfs): make the mount point again, on that tmpfs, where it leaves no trace.
        if m.kind == "bind" and not os.path.isdir(m.source or ""):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        else:
            os.makedirs(target, exist_ok=True)
    if m.kind == "tmpfs":
        opts = []
        if m.size:
            opts.append(f"size={m.size}")
        if m.mode is not None:
            opts.append(f"mode={m.mode:o}")  # else the kernel's default, 1777
        flags = MS_NOSUID | MS_NODEV | (MS_RDONLY if m.readonly else 0)
        _step(f"mount tmpfs on {name}", linux.mount, "tmpfs", target, "tmpfs", flags, ",".join(opts))
        return
    _step(f"bind {m.source} on {name}", linux.mount, m.source, target, None, MS_BIND | MS_REC)
    if m.readonly:
        _step(f"make {name} read-only", linux.mount, None, target, None,
              MS_REMOUNT | MS_BIND | MS_RDONLY)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", ioctl(s, SIOCGIFFLAGS, req))[1]
        ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _enter_root(root: str) -> None:
    os.chdir(root)
    try:
        linux.pivot_root(".", ".")  # stack the old root under the new one, then detach it
        linux.umount(".", linux.MNT_DETACH)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise _Failure(f"pivot_root into {root}: {e.strerror}") from e
        # The host root cannot be pivoted (initramfs): move the rootfs over / and chroot.
        _step("move rootfs", linux.mount, root, "/", None, linux.MS_MOVE)
        os.chroot(".")
    os.chdir("/")


def _protect_proc() -> None:
    """Read-only and masked parts of /proc and /sys, as Docker's default spec has them."""
    for path in ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs"):
        try:
            linux.mount(path, path, None, MS_BIND | MS_REC)
            linux.mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
                        | MS_NODEV | MS_NOEXEC)
        except OSError:
            pass
    for path in ("/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                 "/proc/timer_stats", "/proc/sched_debug"):
        try:
            linux.mount("/dev/null", path, None, MS_BIND)
        except OSError:
            pass
    for path in ("/proc/acpi", "/proc/scsi", "/sys/firmware"):
        try:
            linux.mount("tmpfs", path, "tmpfs", MS_RDONLY)
        except OSError:
            pass


def _setup(cfg: InitConfig) -> None:
    root = cfg.rootfs
    _step("make mounts private", linux.mount, None, "/", None, MS_REC | MS_PRIVATE)
    _step("bind rootfs", linux.mount, root, root, None, MS_BIND | MS_REC)
    _step("mount /proc", linux.mount, "proc", cfg.proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _setup_dev(cfg.dev)
    if cfg.insecure:
        _host_devices(cfg.dev)
    _setup_sys(cfg.sys, writable=cfg.insecure)
    for source, target in cfg.files:  # /etc/hosts, /etc/resolv.conf: read-only, as BuildKit
        _step(f"bind {source}", linux.mount, source, target, None, MS_BIND)
        _step(f"make {source} read-only", linux.mount, None, target, None,
              MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for m in cfg.mounts:
        _extra_mount(m)
    _step("set hostname", linux.sethostname, cfg.hostname)
    if cfg.network == "none":
        _step("bring up loopback", _loopback_up)
    _enter_root(root)
    if not cfg.insecure:
        _protect_proc()


def _exec_command(cfg: InitConfig, alive_fd: int | None = None) -> None:
    """In the command's process: drop privileges and exec; never returns.

    When the command is PID 1 itself, ``alive_fd`` is the helper's liveness pipe: changing
    the UID clears PDEATHSIG, so it is armed again and the helper checked once more.
    """
    code = 127
    try:
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM,
                    signal.SIGQUIT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.umask(0o022)  # what RUN gets under BuildKit, whatever the caller's umask
        for cap in range(linux.last_cap() + 1):
            if cap not in DEFAULT_CAPS and not cfg.insecure:
                try:
                    linux.prctl(linux.PR_CAPBSET_DROP, cap)
                except OSError:
                    pass
        cwd = cfg.cwd
        chdir_later = False
        try:
            os.chdir(cwd)  # as root first: the user may not be able to reach it
        except PermissionError:
            chdir_later = True
        os.setgroups(cfg.groups)
        os.setgid(cfg.gid)
        os.setuid(cfg.uid)
        if alive_fd is not None:
            linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
            if select.select([alive_fd], [], [], 0)[0]:
                os._exit(SETUP_FAILED)
            os.close(alive_fd)
        if chdir_later:
            os.chdir(cwd)
        env = dict(e.partition("=")[::2] for e in cfg.env)
        argv = cfg.argv
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        code = 126 if e.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR) else 127
        what = cfg.argv[0] if e.filename is None else e.filename
        try:
            os.write(2, f"cloche: exec {what}: {e.strerror}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def _pid1(cfg: InitConfig, status_fd: int, alive_fd: int) -> None:
    """PID 1 of the new namespace; never returns.

    By default it sets up and then execs the command, which so becomes PID 1 as it is under
    BuildKit (``echo $$`` prints 1; a signal without a handler does not stop it). With
    ``init`` it stays a minimal init instead: it forks the command, reaps every child and
    exits with the command's status.

    ``alive_fd`` is the read end of a pipe whose write end only the helper holds: if it is at
    EOF once PDEATHSIG is armed, the helper died before, and PID 1 must not go on alone
    (getppid() cannot tell: it is 0 across the namespace boundary).
    """
    code = SETUP_FAILED
    try:
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        if select.select([alive_fd], [], [], 0)[0]:
            os._exit(SETUP_FAILED)  # the helper is already gone
        _setup(cfg)
        if not cfg.init:
            _exec_command(cfg, alive_fd)  # the command becomes PID 1, as under BuildKit
        os.close(alive_fd)
        main = os.fork()
        if main == 0:
            os.close(status_fd)
            _exec_command(cfg)
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid != main:
                continue  # an orphan re-parented to us: reaped
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                _report(status_fd, f"signal {sig}")
                code = 128 + sig
            else:
                code = os.waitstatus_to_exitcode(status)
                _report(status_fd, f"exit {code}")
            break  # leaving kills everything still running in the namespace
    except _Failure as e:
        _report(status_fd, f"error {e}")
    except BaseException as e:  # noqa: BLE001 - PID 1 must always end with a status
        _report(status_fd, f"error {type(e).__name__}: {e}")
    finally:
        os._exit(code)


def main() -> None:
    cfg = InitConfig.decode(sys.stdin.buffer.read())
    status_fd = cfg.status_fd
    os.set_inheritable(status_fd, False)
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides; it kills us on Ctrl-C
    try:
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != cfg.parent_pid:
            os._exit(SETUP_FAILED)
        flags = (linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC
                 | linux.CLONE_NEWPID)
        if cfg.network == "none":
            flags |= linux.CLONE_NEWNET
        linux.unshare(flags)
    except OSError as e:
        _report(status_fd, f"error cannot create namespaces: {e.strerror}")
        os._exit(SETUP_FAILED)
    alive_r, alive_w = os.pipe()
    pid1 = os.fork()
    if pid1 == 0:
        os.close(alive_w)
        _pid1(cfg, status_fd, alive_r)
    os.close(alive_r)
    _report(status_fd, f"pid1 {pid1}")  # lets the runner kill it directly too
    _, status = os.waitpid(pid1, 0)
    if not cfg.init:  # PID 1 was the command: its end is the step's status
        if os.WIFSIGNALED(status):
            _report(status_fd, f"signal {os.WTERMSIG(status)}")
        else:
            _report(status_fd, f"exit {os.waitstatus_to_exitcode(status)}")
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else SETUP_FAILED)


if __name__ == "__main__":
    main()
