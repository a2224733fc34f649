"""Mount a stage's layers as one overlay filesystem whose upper directory is the step's diff.

The caller owns ``upper`` and ``work`` (same filesystem, both empty before the first step)
and reads ``upper`` afterwards to make the layer: a deleted lower file shows up there as a
0/0 character device (whiteout), a replaced directory as one with the ``trusted.overlay.opaque``
xattr. The options keep the upper directory plain so that reading it is simple:
``index=off``, ``redirect_dir=off`` (a renamed lower directory is copied, not redirected),
``metacopy=off`` (a chmod copies the data up too) and ``xino=off``. A writable overlay is
``volatile``: unmounting it does not sync the upper directory to disk (half a second for a step
that wrote 600 MB). The build cache knows (cloche.engine.cache): after a reboot it trusts a
step's snapshot only again as unpacked from the step's layer blob, which is synced.

mount(2) takes at most one page of options. Lower directories are therefore named through
``/proc/self/fd/N`` (an ``O_PATH`` descriptor each, about 17 bytes per layer), which keeps
deep stages mountable without changing the process's working directory (other threads use it).
When even that does not fit in a page (about 200 layers), or above the kernel's own stack
limit (500 lowers), runs of layers are first merged into read-only intermediate overlays
(one level only: the kernel stacks overlays at most two deep).

Where the kernel refuses overlayfs in cloche's user namespace (before Linux 5.11, some
distribution kernels and LSMs: EPERM, EINVAL or ENODEV), ``fuse-overlayfs`` mounts the same
lowers, upper and work directories instead (``choose_driver``: probed once per process,
``$CLOCHE_OVERLAY`` = kernel|fuse|auto forces a choice). Its daemon is a child of the step's
thread (killed with it, PDEATHSIG) and ends when the step unmounts; the upper directory it
leaves is then rewritten into the kernel's notation (``_normalize_fuse_upper``), so that a
snapshot reads the same whichever driver wrote it and the kernel may mount it later.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cloche.errors import SandboxError
from cloche.fs.paths import resolve_in_root
from cloche.fs.rmtree import rmtree
from cloche.rootless.identity import in_user_namespace
from cloche.sandbox import linux
from cloche.sandbox.scratch import make_scratch

PLAIN_OPTIONS = ("index=off", "redirect_dir=off", "metacopy=off", "xino=off")
# In a user namespace (cloche.rootless, a rootless container) overlayfs may not write
# trusted.* xattrs: ``userxattr`` keeps its markers as user.overlay.* (an opaque directory's
# too) and allows redirect_dir only as nofollow (neither made nor followed: as plain).
ROOTLESS_OPTIONS = ("userxattr", "index=off", "redirect_dir=nofollow", "metacopy=off", "xino=off")
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
MAX_LOWERS = 450  # the kernel allows 500; keep some margin
PAGE = 4096
FD_NAME_LEN = len("/proc/self/fd/99999:")


class OverlayError(SandboxError):
    """The overlay filesystem could not be mounted or unmounted."""


# -- which overlay: the kernel's, or fuse-overlayfs where the kernel refuses -------------------

ENV = "CLOCHE_OVERLAY"
CHOICES = ("auto", "kernel", "fuse")
# what mount(2) of overlayfs returns where a user namespace may not use it: EPERM (no
# FS_USERNS_MOUNT before 5.11, an LSM), EINVAL (an option such as userxattr unknown), ENODEV
# (no overlay module)
FALLBACK_ERRNOS = frozenset({errno.EPERM, errno.EINVAL, errno.ENODEV})
FUSE = "fuse-overlayfs"
DEV_FUSE = "/dev/fuse"
NO_OVERLAY_HINT = ("install fuse-overlayfs (apt-get install fuse-overlayfs), or build with "
                   "--isolation=chroot, which needs no mounts (docs/rootless.md, "
                   "docs/isolation.md)")


@dataclass(frozen=True)
class Driver:
    """The overlay a build mounts: ``kernel`` or ``fuse``; ``refused`` is the kernel's errno
    when ``auto`` fell back to fuse-overlayfs (0 otherwise)."""

    name: str
    refused: int = 0

    @property
    def notice(self) -> str | None:
        """The one warning a build prints for the fallback."""
        if self.name != "fuse" or not self.refused:
            return None
        return (f"the kernel refused overlayfs in the user namespace "
                f"({errno.errorcode.get(self.refused, str(self.refused))}); "
                f"using fuse-overlayfs (slower)")


def requested_driver() -> str:
    """``$CLOCHE_OVERLAY``: kernel, fuse or auto (the default, also when empty)."""
    value = os.environ.get(ENV, "").strip().lower() or "auto"
    if value not in CHOICES:
        raise OverlayError(f"${ENV}={os.environ.get(ENV)!r}: want one of {', '.join(CHOICES)}")
    return value


def fuse_problem() -> str | None:
    """Why fuse-overlayfs cannot be used here, None when it can."""
    if shutil.which(FUSE) is None:
        return "fuse-overlayfs is not installed"
    if not os.access(DEV_FUSE, os.R_OK | os.W_OK):
        try:
            mode = f" (mode {stat.S_IMODE(os.stat(DEV_FUSE).st_mode):04o})"
        except OSError:
            return f"fuse-overlayfs needs {DEV_FUSE}, which does not exist here"
        return f"fuse-overlayfs needs {DEV_FUSE}, which this user cannot open{mode}"
    return None


def _fuse_hint(problem: str) -> str:
    if DEV_FUSE in problem and "mode" in problem:
        return (f"as root: chmod 0666 {DEV_FUSE} (what udev sets on most distributions), or "
                "build with --isolation=chroot, which needs no mounts (docs/rootless.md)")
    return NO_OVERLAY_HINT


def decide(requested: str, *, user_namespace: bool, kernel_errno: int | None,
           fuse: str | None) -> Driver:
    """The overlay to use. ``requested``: $CLOCHE_OVERLAY; ``user_namespace``: whether this
    process runs in one (the host's root always gets the kernel's overlayfs unless forced);
    ``kernel_errno``: how a probe mount of the kernel's overlayfs failed (None: it worked, or
    was not tried); ``fuse``: why fuse-overlayfs cannot be used (``fuse_problem``), None when
    it can."""
    if requested == "kernel":
        return Driver("kernel")
    if requested == "fuse":
        if fuse is not None:
            raise OverlayError(f"${ENV}=fuse, but {fuse}", hint=_fuse_hint(fuse))
        return Driver("fuse")
    if not user_namespace or kernel_errno is None or kernel_errno not in FALLBACK_ERRNOS:
        return Driver("kernel")  # another error: the step's own mount reports it
    if fuse is not None:
        name = errno.errorcode.get(kernel_errno, str(kernel_errno))
        raise OverlayError(f"the kernel refused overlayfs in the user namespace ({name}), "
                           f"and {fuse}", hint=_fuse_hint(fuse))
    return Driver("fuse", kernel_errno)


_chosen: list[Driver] = []
_choice_lock = threading.Lock()


def choose_driver(scratch: Path | None = None) -> Driver:
    """The overlay this process mounts (``decide``), probed once: in a user namespace with
    ``auto``, a throw-away kernel mount in ``scratch`` (on the store's filesystem, which the
    answer may depend on) from a thread with a mount namespace of its own."""
    with _choice_lock:
        if not _chosen:
            requested = requested_driver()
            userns = in_user_namespace()
            probed = _probe_kernel(scratch) if requested == "auto" and userns else None
            problem = fuse_problem() if requested == "fuse" or probed in FALLBACK_ERRNOS \
                else None
            _chosen.append(decide(requested, user_namespace=userns, kernel_errno=probed,
                                  fuse=problem))
        return _chosen[0]


def _probe_kernel(scratch: Path | None) -> int | None:
    """The errno of mounting a small overlay with the kernel, None when it mounts."""
    result: list[int | None] = []

    def probe() -> None:
        try:
            linux.unshare(linux.CLONE_NEWNS)  # this thread only: dropped when it ends
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
            base = make_scratch("probe", scratch)
            try:
                dirs = [base / name for name in ("lower", "upper", "work", "merged")]
                for d in dirs:
                    d.mkdir()
                _kernel_mount([str(dirs[0])], dirs[1], dirs[2], dirs[3])
                linux.umount(dirs[3])
                result.append(None)
            finally:
                rmtree(base, True)
        except OSError as e:
            result.append(e.errno)

    thread = threading.Thread(target=probe, name="cloche-overlay-probe")
    thread.start()
    thread.join()
    return result[0] if result else errno.EIO


def _options(lower_names: Sequence[str], upper: Path | None, work: Path | None,
             extra: Sequence[str]) -> str:
    parts = ["lowerdir=" + ":".join(lower_names)]
    if upper is not None and work is not None:
        parts += [f"upperdir={_escape(str(upper))}", f"workdir={_escape(str(work))}"]
    return ",".join(parts + list(extra))


def _escape(path: str) -> str:
    """Overlay splits options on ',' and lower dirs on ':'; both may be escaped with '\\'."""
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def _kernel_mount(lower_names: Sequence[str], upper: Path | None, work: Path | None,
                  target: Path) -> None:
    """Mount with the plain options, dropping those the kernel rejects (older kernels);
    raises the last OSError."""
    plain = ROOTLESS_OPTIONS if in_user_namespace() else PLAIN_OPTIONS
    extra = list(plain) + (["volatile"] if upper is not None else [])
    while True:
        data = _options(lower_names, upper, work, extra)
        if len(data) >= PAGE:
            raise OverlayError(f"overlay options for {target} exceed one page "
                               f"({len(lower_names)} lower directories)")
        try:
            linux.mount("overlay", target, "overlay", 0, data)
            return
        except OSError as e:
            if e.errno == errno.EINVAL and extra:
                extra.pop()  # newest first: volatile, xino, metacopy, redirect_dir, index
                continue
            raise


def _mount_overlay(lower_names: Sequence[str], upper: Path | None, work: Path | None,
                   target: Path) -> None:
    try:
        _kernel_mount(lower_names, upper, work, target)
    except OSError as e:
        if e.errno == errno.EPERM:
            raise OverlayError(
                f"mounting overlay on {target} is not permitted",
                hint="run cloche as root, or as a user on Linux 5.11 or later; elsewhere "
                     + NO_OVERLAY_HINT) from e
        raise OverlayError(f"cannot mount overlay on {target}: {e.strerror}") from e


def _fits(other_options: str) -> int:
    """How many ``/proc/self/fd/N`` lower names fit in one page next to the other options."""
    return min(MAX_LOWERS, (PAGE - 1 - len(other_options)) // FD_NAME_LEN)


@contextmanager
def _fd_names(dirs: Sequence[Path]) -> Iterator[list[str]]:
    """Short ``/proc/self/fd/N`` names for directories, open while the context lasts."""
    fds: list[int] = []
    try:
        for d in dirs:
            try:
                fds.append(os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
            except OSError as e:
                raise OverlayError(f"lower directory {d} cannot be used: {e.strerror}") from e
        yield [f"/proc/self/fd/{fd}" for fd in fds]
    finally:
        for fd in fds:
            os.close(fd)


@contextmanager
def mount_overlay(lowers: Sequence[Path], upper: Path, work: Path, target: Path, *,
                  scratch: Path | None = None) -> Iterator[Path]:
    """Mount ``lowers`` (top first) with ``upper``/``work`` on ``target``; unmount on exit.

    With no lowers an empty directory stands in. Yields ``target``. Mount points it needs
    are made in ``scratch`` (a build's folder), else in $TMPDIR (sandbox/scratch.py).
    fuse-overlayfs mounts it instead where ``choose_driver`` says so.
    """
    with ExitStack() as stack:
        lowers = list(lowers)
        if not lowers:
            empty = make_scratch("empty", scratch)
            stack.callback(rmtree, empty, True)
            lowers = [empty]
        if choose_driver(scratch).name == "fuse":
            daemon = _mount_fuse(lowers, upper, work, target)
            stack.callback(_unmount_fuse, target, daemon, upper)
            yield target
            return
        top_fit = _fits(_options([], upper, work, PLAIN_OPTIONS))
        if len(lowers) > top_fit:
            # Merge runs of layers into read-only overlays, used as the lowers of the top one.
            # Only one level: the kernel allows overlays two deep (FILESYSTEM_MAX_STACK_DEPTH).
            n = _fits(_options([], None, None, PLAIN_OPTIONS))
            chunks = [lowers[i:i + n] for i in range(0, len(lowers), n)]
            if len(chunks) > top_fit:
                raise OverlayError(f"too many layers to mount ({len(lowers)})")
            lowers = [_mount_readonly(chunk, stack, scratch) for chunk in chunks]
        with _fd_names(lowers) as names:
            _mount_overlay(names, upper, work, target)
        stack.callback(_unmount, target)
        yield target


def _mount_readonly(lowers: Sequence[Path], stack: ExitStack, scratch: Path | None) -> Path:
    """A read-only overlay of ``lowers`` on a new temporary directory (cleaned by ``stack``)."""
    if len(lowers) == 1:
        return lowers[0]
    merged = make_scratch("lower", scratch)
    stack.callback(rmtree, merged, True)
    with _fd_names(lowers) as names:
        _mount_overlay(names, None, None, merged)
    stack.callback(_unmount, merged)
    return merged


def _unmount(target: Path) -> None:
    try:
        linux.umount(target)
    except OSError as e:
        if e.errno == errno.EBUSY:
            linux.umount(target, linux.MNT_DETACH)  # something still open: detach lazily
        elif e.errno != errno.EINVAL:  # EINVAL: already unmounted
            raise OverlayError(f"cannot unmount {target}: {e.strerror}") from e


# -- fuse-overlayfs --------------------------------------------------------------------------

# Run between fork and exec of the daemon, in a fresh interpreter (forking this threaded
# process into Python code is unsafe): the daemon gets SIGKILL when the thread that started it
# ends, so that kill -9 of cloche ends it too (it holds the thread's mount namespace, which
# would otherwise keep it and its mount alive for good).
_PDEATHSIG = ("import ctypes, os, sys\n"
              "ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)\n"  # PR_SET_PDEATHSIG, SIGKILL
              "if os.getppid() != int(sys.argv[1]):\n"
              "    os._exit(70)\n"  # the parent is already gone
              "os.execvp(sys.argv[2], sys.argv[2:])\n")
FUSE_START_SECONDS = 30.0
FUSE_STOP_SECONDS = 30.0
FUSE_OPAQUE_XATTR = "user.fuseoverlayfs.opaque"
FUSE_OPAQUE_FILE = ".wh..wh..opq"
WH = ".wh."


@dataclass
class _Daemon:
    process: subprocess.Popen[bytes]
    log: IO[bytes]  # its stderr (an unlinked temporary file)

    def output(self) -> str:
        self.log.seek(0)
        text = self.log.read(1 << 16).decode(errors="replace")
        lines = [ln for ln in text.splitlines()
                 if ln.strip() and not ln.startswith("unknown argument ignored")]
        return "; ".join(lines[-5:])


def _mount_fuse(lowers: Sequence[Path], upper: Path, work: Path, target: Path) -> _Daemon:
    """Start fuse-overlayfs (in the foreground, a child of this thread) on ``target`` and
    wait until the mount is there."""
    paths = [str(p) for p in (*lowers, upper, work)]
    bad = [p for p in paths if any(c in p for c in ":,\\")]
    if bad:
        raise OverlayError(f"fuse-overlayfs cannot take {bad[0]!r} (':', ',' or '\\' in "
                           "the path)", hint="use a store path without them (--root)")
    options = ",".join([f"lowerdir={':'.join(paths[:-2])}", f"upperdir={paths[-2]}",
                        f"workdir={paths[-1]}", "allow_other", "fsync=0"])
    fuse = shutil.which(FUSE)
    if fuse is None:
        raise OverlayError(f"{FUSE} is not installed", hint=NO_OVERLAY_HINT)
    argv = [fuse, "-f", "-o", options, str(target)]
    if sys.executable:
        argv = [sys.executable, "-I", "-S", "-c", _PDEATHSIG, str(os.getpid()), *argv]
    log = tempfile.TemporaryFile()
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=log, close_fds=True, cwd="/")
    except OSError as e:
        log.close()
        raise OverlayError(f"cannot start {FUSE}: {e.strerror}", hint=NO_OVERLAY_HINT) from e
    daemon = _Daemon(process, log)
    deadline = time.monotonic() + FUSE_START_SECONDS
    delay = 0.001
    while not _is_mounted(target):
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)  # never mounted in time
            _stop(daemon)
            problem = fuse_problem()
            raise OverlayError(f"{FUSE} could not mount {target}: "
                               f"{daemon.output() or 'exit status ' + str(process.returncode)}",
                               hint=_fuse_hint(problem) if problem else NO_OVERLAY_HINT)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return daemon


def _is_mounted(target: Path) -> bool:
    try:
        return os.stat(target).st_dev != os.stat(target.parent).st_dev
    except OSError:
        return False


def _stop(daemon: _Daemon) -> None:
    """Wait for the daemon to end (it does once its mount is gone); kill it if it does not."""
    try:
        daemon.process.wait(timeout=FUSE_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait()
    finally:
        daemon.log.close()


def _unmount_fuse(target: Path, daemon: _Daemon, upper: Path) -> None:
    """Unmount (as root of this mount namespace: umount2, no fusermount3 needed), wait for the
    daemon to end, then rewrite ``upper`` in the kernel's notation."""
    try:
        _unmount(target)  # the daemon then reads ENODEV and exits
    finally:
        _stop(daemon)
    _normalize_fuse_upper(upper)


def _normalize_fuse_upper(upper: Path) -> None:
    """Rewrite what fuse-overlayfs writes differently from the kernel's overlayfs, so that
    the upper directory is one the kernel (and every reader of snapshots) understands:

    - an opaque directory: ``trusted.overlay.opaque`` where it may (the host's root), else
      ``user.fuseoverlayfs.opaque``, and an empty ``.wh..wh..opq`` file in it: the file and
      the fuse xattr go, the kernel's xattr of this mode (``user.overlay.opaque`` in a user
      namespace, as mounted with ``userxattr``) is set;
    - a whiteout where it may not make a 0/0 device (before Linux 5.8 in a user namespace,
      or FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT): an empty ``.wh.NAME`` file, made a 0/0 device
      NAME when this process may (else left: layers/diff.py reads that form too);
    - whiteouts of ``.wh.`` names (it writes one for ``.wh..opq`` beside a new opaque
      directory's marker): removed, they stand for nothing.

    The walk is iterative, never follows a link, and leaves a directory it cannot open (too
    deep for a path) as it is.
    """
    opaque = "user.overlay.opaque" if in_user_namespace() else "trusted.overlay.opaque"
    root = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        pending = [""]
        while pending:
            rel = pending.pop()
            try:
                fd = os.open(rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=root) if rel else os.dup(root)
            except OSError:
                continue
            try:
                pending.extend(_normalize_dir(fd, rel, opaque))
            finally:
                os.close(fd)
    finally:
        os.close(root)


def _normalize_dir(fd: int, rel: str, opaque: str) -> list[str]:
    subdirs = []
    try:
        fuse_opaque = os.getxattr(fd, FUSE_OPAQUE_XATTR) == b"y"
    except OSError as e:
        if e.errno not in (errno.ENODATA, errno.ENOTSUP):
            raise
        fuse_opaque = False
    marker = False
    with os.scandir(fd) as it:
        entries = [(e.name, e.stat(follow_symlinks=False)) for e in it]
    for name, st in entries:
        if stat.S_ISDIR(st.st_mode):
            subdirs.append(f"{rel}/{name}" if rel else name)
            continue
        if not name.startswith(WH):
            continue
        if name == FUSE_OPAQUE_FILE and stat.S_ISREG(st.st_mode):
            marker = True
        elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            os.unlink(name, dir_fd=fd)  # a whiteout of a .wh. name
        elif stat.S_ISREG(st.st_mode) and st.st_size == 0 and not name[len(WH):].startswith(WH):
            try:
                os.mknod(name[len(WH):], stat.S_IFCHR, 0, dir_fd=fd)
            except OSError:
                continue  # no devices here: left in fuse-overlayfs' form
            os.unlink(name, dir_fd=fd)
    if fuse_opaque or marker:
        try:
            os.setxattr(fd, opaque, b"y")
        except OSError:
            return subdirs  # left in fuse-overlayfs' form, which layers/diff.py reads too
        if marker:
            os.unlink(FUSE_OPAQUE_FILE, dir_fd=fd)
        if fuse_opaque:
            os.removexattr(fd, FUSE_OPAQUE_XATTR)
    return subdirs


def prune_copied_up(upper: Path, lowers: Sequence[Path], paths: Iterable[str]) -> tuple[str, ...]:
    """Drop directories from an unmounted overlay's upper dir that were only copied up.

    Mounting over a stub makes overlayfs copy the stub's parent directory up (``/etc`` for a
    missing ``/etc/hosts``). ``run`` restores its times and reports it in
    ``RunResult.stub_parents``; after the overlay is unmounted (changing the upper directory
    of a mounted overlay is undefined), this removes each such directory that is empty, not
    opaque, and has the mode, owner and mtime of the lower directory it hides, so that the
    layer does not list it. Paths are tried deepest first; returns those removed.
    """
    removed = []
    for path in sorted(set(paths), key=lambda p: p.count("/"), reverse=True):
        rel = path.strip("/")
        if not rel or ".." in rel.split("/"):
            continue
        host = upper / rel
        if resolve_in_root(upper, path, follow_last=False) != host:
            continue  # a symlink on the way: not something run() reported
        try:
            st = os.lstat(host)
            if not stat.S_ISDIR(st.st_mode) or os.listdir(host):
                continue
            if any(_has_xattr(host, name) for name in OPAQUE_XATTRS):
                continue
        except FileNotFoundError:
            continue
        below = _lower_entry(lowers, rel)
        if below is None or not stat.S_ISDIR(below.st_mode):
            continue
        if (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns) != (
                below.st_mode, below.st_uid, below.st_gid, below.st_mtime_ns):
            continue
        os.rmdir(host)
        removed.append(path)
    return tuple(removed)


def _lower_entry(lowers: Sequence[Path], rel: str) -> os.stat_result | None:
    """What the topmost lower layer that has ``rel`` holds there."""
    for lower in lowers:
        host = lower / rel
        if resolve_in_root(lower, rel, follow_last=False) != host:
            return None
        try:
            return os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return None


def _has_xattr(path: Path, name: str) -> bool:
    try:
        os.getxattr(path, name, follow_symlinks=False)
        return True
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP):
            return False
        raise
