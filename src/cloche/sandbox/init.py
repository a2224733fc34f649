"""The sandbox's own process: new namespaces, the container's mounts, PID 1 and the command.

``runner.run`` starts this module in a fresh interpreter (``python -m cloche.sandbox.init``)
instead of forking the caller: the caller runs stages in threads, and a fork of a threaded
Python process may inherit a lock another thread held. The fresh process is single-threaded:

1. It reads its configuration (``initconfig.InitConfig``, typed and checked) from stdin,
   points stdin at /dev/null, and unshares the mount, UTS, IPC and PID namespaces (and the
   network one unless ``--network=host``: for ``default`` the runner then plugs
   slirp4netns into it, and PID 1 waits for that on ``net_fd`` before the command runs).
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
import resource  # imported here: nothing can be imported once in the step's root
import select
import signal
import socket
import stat
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from fcntl import ioctl
from typing import Any

from cloche.errors import ClocheError
from cloche.sandbox import linux, mountat
from cloche.sandbox.confine import enter as enter_confinement  # imported before pivot_root
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
from cloche.sandbox.mountat import MountPointError, Root, fd_path

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


def _point(root: Root, target: str, *, is_dir: bool, what: str) -> int:
    """The fd of a mount point, walked inside the root (``mountat.Root.point``)."""
    try:
        return root.point(target, is_dir=is_dir, what=what)
    except MountPointError as e:
        raise _Failure(str(e)) from e


def _setup_dev(root: Root, dev: str, nodev: bool = True, shm_size: int = 64 << 20) -> None:
    """A /dev like runc's: a small tmpfs with the usual nodes, shm, pts, mqueue and links.

    runc keeps the step from using other nodes with the devices cgroup; here /dev is made
    ``nodev`` (as are the rootfs and every other mount) once its nodes are in place, each
    node bound on itself first: a bind keeps the flags its tmpfs had then, so those nodes
    work, while a node the step makes (CAP_MKNOD is in Docker's default set, so ``mknod``
    succeeds as there) cannot be opened. The nodes are this tmpfs's own, not the host's, so
    a chmod in the step cannot change the host's /dev/null.
    """
    point = _point(root, dev, is_dir=True, what="/dev")
    try:
        _step("mount /dev", linux.mount, "tmpfs", fd_path(point), "tmpfs", MS_NOSUID,
              "mode=755,size=65536k")
    finally:
        os.close(point)
    fd = _point(root, dev, is_dir=True, what="/dev")  # the tmpfs's root, now
    try:
        for name in DEVICES:
            _device(fd, name, bind_self=nodev)
        os.mkdir("shm", 0o1777, dir_fd=fd)
        with _sub(fd, "shm") as shm:
            _step("mount /dev/shm", linux.mount, "shm", shm, "tmpfs",
                  MS_NOSUID | MS_NODEV | MS_NOEXEC, f"mode=1777,size={shm_size}")  # --shm-size
        os.mkdir("pts", 0o755, dir_fd=fd)
        with _sub(fd, "pts") as pts:
            _step("mount /dev/pts", linux.mount, "devpts", pts, "devpts",
                  MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")
        os.mkdir("mqueue", 0o755, dir_fd=fd)
        try:
            with _sub(fd, "mqueue") as mqueue:
                linux.mount("mqueue", mqueue, "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError:
            os.rmdir("mqueue", dir_fd=fd)  # optional, as in runc's default spec
        links = {"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
                 "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}
        for name, target in links.items():
            os.symlink(target, name, dir_fd=fd)
        if nodev:
            _step("make /dev nodev", linux.mount, None, fd_path(fd), None,
                  MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)
    finally:
        os.close(fd)


@contextmanager
def _sub(dir_fd: int, name: str) -> Iterator[str]:
    """/proc/self/fd/N of an O_PATH fd of ``name`` in ``dir_fd``, for as long as needed."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        yield fd_path(fd)
    finally:
        os.close(fd)


def _device(dev_fd: int, name: str, *, bind_self: bool) -> None:
    """/dev/NAME in the /dev tmpfs: a node of its own like the host's (crw-rw-rw- root root,
    whatever the umask), bound on itself when /dev is to be nodev."""
    host = os.stat(f"/dev/{name}")
    try:
        os.mknod(name, 0o666 | stat.S_IFCHR, host.st_rdev, dir_fd=dev_fd)
    except OSError:
        # No mknod here (a restricted host): bind the host's node instead.
        os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                         dir_fd=dev_fd))
        with _sub(dev_fd, name) as node:
            _step(f"bind /dev/{name}", linux.mount, f"/dev/{name}", node, None, MS_BIND)
        return
    with _sub(dev_fd, name) as node:
        os.chmod(node, 0o666)
        if bind_self:
            _step(f"bind /dev/{name}", linux.mount, node, node, None, MS_BIND)


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


def _setup_sys(root: Root, sys_dir: str, writable: bool = False) -> None:
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if writable else MS_RDONLY)
    point = _point(root, sys_dir, is_dir=True, what="/sys")
    try:
        try:
            linux.mount("sysfs", fd_path(point), "sysfs", flags)
        except OSError:
            # A fresh sysfs can be refused (e.g. nested without a net namespace): use the
            # host's, read-only all the way down (its cgroup mounts included).
            _step("bind /sys", mountat.bind, "/sys", point, 0 if writable else mountat.READ_ONLY)
    finally:
        os.close(point)
    root.refuse_below(sys_dir)


def _secret_mount(m: InitMount, target_fd: int) -> None:
    """A secret (sandbox/secrets.py): the value, read from the runner's memfd, goes onto a
    tmpfs mounted in this mount namespace only, the file is bound read-only at the target
    and the tmpfs detached. No host file ever holds the plaintext, and it goes with the
    step's namespace, whatever ends cloche."""
    holder, data_fd = m.source or "", m.fd
    if data_fd is None:
        raise _Failure(f"secret {m.path}: no value")
    _step(f"mount the tmpfs of secret {m.path}", linux.mount, "tmpfs", holder, "tmpfs",
          MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=700")
    path = os.path.join(holder, "secret")
    try:
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            offset = 0
            while chunk := os.pread(data_fd, 1 << 16, offset):
                offset += len(chunk)
                while chunk:
                    chunk = chunk[os.write(out, chunk):]
            os.fchown(out, m.uid or 0, m.gid or 0)
            os.fchmod(out, 0o400 if m.mode is None else m.mode)
        finally:
            os.close(out)
        os.close(data_fd)
    except OSError as e:
        raise _Failure(f"secret {m.path}: {e.strerror or e}") from e
    _step(f"bind secret {m.path}", mountat.bind, path, target_fd, mountat.READ_ONLY)
    _step(f"detach the tmpfs of secret {m.path}", linux.umount, holder, linux.MNT_DETACH)


def _extra_mount(root: Root, m: InitMount, nodev: bool = True) -> None:
    """One ``--mount`` (or the heredoc script's), on its mount point's fd. A stub hidden by a
    mount made since (/dev/pipes under the /dev tmpfs) is made again on that mount, where it
    leaves no trace. Binds are recursive, and read-only all the way down when read-only."""
    name = m.path
    is_dir = m.kind == "tmpfs" or (m.kind == "bind" and os.path.isdir(m.source or ""))
    point = _point(root, m.target, is_dir=is_dir, what=name)
    try:
        if m.kind == "secret":
            _secret_mount(m, point)
            return
        if m.kind == "tmpfs":
            opts = []
            if m.size:
                opts.append(f"size={m.size}")
            if m.mode is not None:
                opts.append(f"mode={m.mode:o}")  # else the kernel's default, 1777
            flags = MS_NOSUID | MS_NODEV | (MS_RDONLY if m.readonly else 0)
            _step(f"mount tmpfs on {name}", linux.mount, "tmpfs", fd_path(point), "tmpfs", flags,
                  ",".join(opts))
            return
        attrs = ((mountat.MOUNT_ATTR_RDONLY if m.readonly else 0)
                 | (mountat.MOUNT_ATTR_NODEV if nodev else 0))
        _step(f"bind {m.source} on {name}", mountat.bind, m.source or "", point, attrs)
    finally:
        os.close(point)


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
    # From here every mount point is an fd walked inside the root, never a path string:
    # once /proc is mounted in it, /proc/1/root is the host's root (mountat.py).
    rootfs = Root(root, os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
    nodev = not cfg.insecure  # no device node of an image or a step can be opened
    if nodev:
        _step("make the rootfs nodev", mountat.set_attrs, rootfs.fd, mountat.MOUNT_ATTR_NODEV)
    point = _point(rootfs, cfg.proc, is_dir=True, what="/proc")
    _step("mount /proc", linux.mount, "proc", fd_path(point), "proc",
          MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.close(point)
    rootfs.refuse_below(cfg.proc)
    _setup_dev(rootfs, cfg.dev, nodev, cfg.shm_size)
    if cfg.insecure:
        _host_devices(cfg.dev)
    _setup_sys(rootfs, cfg.sys, writable=cfg.insecure)
    for source, target in cfg.files:  # /etc/hosts, /etc/resolv.conf: read-only, as BuildKit
        point = _point(rootfs, target, is_dir=False, what=source)
        _step(f"bind {source}", mountat.bind, source, point, mountat.READ_ONLY)
        os.close(point)
    for m in cfg.mounts:
        _extra_mount(rootfs, m, nodev)
    os.close(rootfs.fd)
    _step("set hostname", linux.sethostname, cfg.hostname)
    if cfg.network != "host":  # a namespace of its own: none, or default (slirp4netns)
        _step("bring up loopback", _loopback_up)
    _enter_root(root)
    if not cfg.insecure:
        _protect_proc()


def _set_rlimits(rlimits: tuple[tuple[str, int, int], ...]) -> None:
    """``--ulimit NAME=SOFT:HARD`` for the command (and what it starts), as runc sets them
    just before exec; a value the kernel refuses ends the step with a line naming it."""
    for name, soft, hard in rlimits:
        which = getattr(resource, f"RLIMIT_{name.upper()}")
        def value(v: int) -> int:
            return resource.RLIM_INFINITY if v < 0 else v

        try:
            resource.setrlimit(which, (value(soft), value(hard)))
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) else str(e)
            os.write(2, f"cloche: --ulimit {name}={soft}:{hard}: {why}\n".encode())
            os._exit(SETUP_FAILED)


def _confine(cfg: InitConfig) -> None:
    """A new session keyring, a private cgroup namespace and, unless ``--security=insecure``,
    Docker's default seccomp filter (sandbox/confine.py), while still root: a failure ends the
    step with a line saying why, never a step that runs unconfined."""
    try:
        enter_confinement(insecure=cfg.insecure, caps=DEFAULT_CAPS)
    except (OSError, ClocheError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        try:
            os.write(2, f"cloche: confining the step: {why}\n".encode())
        finally:
            os._exit(SETUP_FAILED)


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
        _set_rlimits(cfg.rlimits)  # as root: a hard limit may be raised
        _confine(cfg)  # keyring, cgroup namespace, seccomp: the last step as root
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


def _await_network(net_fd: int, alive_fd: int) -> None:
    """Network ``default``: wait (while the mounts above were being made, the runner started
    slirp4netns) until the runner says the namespace is wired, so that the command never
    starts without its network; EOF means it never will be."""
    ready = select.select([net_fd, alive_fd], [], [])[0]
    if alive_fd in ready and net_fd not in ready:
        os._exit(SETUP_FAILED)  # the helper is gone
    if os.read(net_fd, 1) != b"1":
        raise _Failure("the step's network (slirp4netns) was not set up")
    os.close(net_fd)


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
        if cfg.net_fd >= 0:
            _await_network(cfg.net_fd, alive_fd)
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
    if cfg.net_fd >= 0:
        os.set_inheritable(cfg.net_fd, False)  # the command never gets it
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
        if cfg.network != "host":  # default: slirp4netns is plugged in by the runner
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
