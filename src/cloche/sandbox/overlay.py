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
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

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


def _options(lower_names: Sequence[str], upper: Path | None, work: Path | None,
             extra: Sequence[str]) -> str:
    parts = ["lowerdir=" + ":".join(lower_names)]
    if upper is not None and work is not None:
        parts += [f"upperdir={_escape(str(upper))}", f"workdir={_escape(str(work))}"]
    return ",".join(parts + list(extra))


def _escape(path: str) -> str:
    """Overlay splits options on ',' and lower dirs on ':'; both may be escaped with '\\'."""
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def _mount_overlay(lower_names: Sequence[str], upper: Path | None, work: Path | None,
                   target: Path) -> None:
    """Mount with the plain options, dropping those the kernel rejects (older kernels)."""
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
            if e.errno == errno.EPERM:
                raise OverlayError(
                    f"mounting overlay on {target} is not permitted",
                    hint="run cloche as root, or as a user on Linux 5.11 or later "
                         "(docs/rootless.md)"
                ) from e
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
    """
    with ExitStack() as stack:
        lowers = list(lowers)
        if not lowers:
            empty = make_scratch("empty", scratch)
            stack.callback(rmtree, empty, True)
            lowers = [empty]
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
