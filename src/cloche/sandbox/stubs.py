"""Mount points the sandbox creates in a rootfs, and their removal after the step.

A scratch-based stage has no /proc, /dev or /sys, many images have no /etc/hosts, and a
``--mount`` target rarely exists. The sandbox must create them to mount over them, but they
are not the step's output and must not land in its layer (BuildKit removes its "mount stubs"
the same way). Each created path is recorded; afterwards it is removed if it is still an
empty stub, and the parent's times are put back when the step did not touch the parent,
so that a copied-up parent directory compares equal to the lower one. /proc, /dev and /sys
are the exception: made when missing, they stay (``ensure(keep=True)``), as with BuildKit.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cloche.errors import ClocheError, SandboxError
from cloche.fs.owners import recording, set_owner
from cloche.fs.paths import Maker, open_dir_strict, walk_in_root

# Kernel file systems: the init mounts /proc and /sys over their stubs, and a mount point
# inside them would be made (or mounted) on the kernel's view of the host (/proc/1/root).
KERNEL_DIRS = ("proc", "sys")


@dataclass(frozen=True)
class _Created:
    parts: tuple[str, ...]               # below the root, symlinks resolved
    is_dir: bool
    parent_times: tuple[int, int]        # parent's (atime_ns, mtime_ns) before creation
    parent_mtime_after: int              # parent's mtime_ns right after creation

    @property
    def path(self) -> str:
        return "/" + "/".join(self.parts)


@dataclass
class Stubs:
    """The stubs created in one rootfs for one step (mutable while the step is prepared).

    Both ways go through a descriptor of the rootfs and never hand the kernel a path in it:
    stubs are made by a no-follow walk (``walk_in_root``: symlinks are resolved inside the
    rootfs), and removed through directories opened with ``O_NOFOLLOW`` one component at a
    time, so that a step that swapped a stub's parent for a symlink to a host folder (``/x ->
    /srv``) finds that folder untouched: a way that changed is left alone.
    """

    rootfs: Path
    created: list[_Created] = field(default_factory=list)

    def ensure(self, path: str, *, is_dir: bool, keep: bool = False) -> Path:
        """The host path of ``path`` in the rootfs, created (with parents) when missing.

        Symlinks on the way are followed inside the rootfs; what is missing is created at
        the place they lead to, and recorded under that (resolved) path. A path that leads
        into /proc or /sys (other than those stubs themselves) is refused. With ``keep``
        what is created is not recorded, so it stays in the layer: runc makes /proc, /dev
        and /sys that way, and BuildKit's clean-up (executor.MountStubsCleaner) only ever
        removes the stubs of /etc/hosts, /etc/resolv.conf and the step's ``--mount``s.
        """
        root_fd = os.open(self.rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd, parts = walk_in_root(root_fd, path, make=self._maker(path, keep),
                                     dir_last=is_dir)
            os.close(fd)
        except SandboxError:
            raise
        except (ClocheError, OSError) as e:
            text = e.strerror if isinstance(e, OSError) else str(e)
            raise SandboxError(f"cannot create mount point {path} in {self.rootfs}: "
                               f"{text}") from e
        finally:
            os.close(root_fd)
        _refuse_kernel(path, parts)
        return self.rootfs.joinpath(*parts)

    def _maker(self, path: str, keep: bool) -> Maker:
        """Makes a missing stub and records it unless ``keep`` (refusing one inside /proc or
        /sys)."""

        def make(parent_fd: int, name: str, is_dir: bool, parts: tuple[str, ...]) -> None:
            _refuse_kernel(path, parts)
            before = os.fstat(parent_fd)
            if is_dir:
                os.mkdir(name, 0o755, dir_fd=parent_fd)
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=parent_fd)
            else:
                fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644, dir_fd=parent_fd)
            try:
                os.fchmod(fd, 0o755 if is_dir else 0o644)  # whatever the caller's umask
                if recording():  # cloche's, not the step's user's (engine/plaintree.py)
                    set_owner(fd, 0, 0)
            finally:
                os.close(fd)
            if keep:
                return
            after = os.fstat(parent_fd)
            self.created.append(_Created(parts, is_dir, (before.st_atime_ns, before.st_mtime_ns),
                                         after.st_mtime_ns))
        return make

    def remove(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Remove the stubs that are still empty, newest first.

        Returns the removed stubs, and the existing directories that held one and that the
        step did not touch (their times are restored; an overlay may have copied them up,
        see ``overlay.prune_copied_up``), deepest first.
        """
        removed: list[str] = []
        parents: list[str] = []
        created = {c.path for c in self.created}
        root_fd = os.open(self.rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for c in reversed(self.created):
                parent_fd = open_dir_strict(root_fd, c.parts[:-1])
                if parent_fd is None:
                    continue  # the way there is gone or is a symlink now: not ours any more
                try:
                    untouched = os.fstat(parent_fd).st_mtime_ns == c.parent_mtime_after
                    if not self._remove_one(c, parent_fd):
                        continue
                    removed.append(c.path)
                    if not untouched:
                        continue
                    # the step did not change the parent: give it its old times back
                    os.utime(parent_fd, ns=c.parent_times)
                finally:
                    os.close(parent_fd)
                parent = "/" + "/".join(c.parts[:-1])
                if parent != "/" and parent not in created and parent not in parents:
                    parents.append(parent)
        finally:
            os.close(root_fd)
        self.created.clear()
        parents.sort(key=lambda p: p.count("/"), reverse=True)
        return tuple(reversed(removed)), tuple(parents)

    @staticmethod
    def _remove_one(c: _Created, parent_fd: int) -> bool:
        """Remove stub ``c`` from its parent when it is still an empty stub of its kind
        (unlinkat never follows the last component); False when it is kept."""
        name = c.parts[-1]
        try:
            if c.is_dir:
                os.rmdir(name, dir_fd=parent_fd)
            else:
                st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode) or st.st_size != 0:
                    return False  # the step replaced it with something real: keep it
                os.unlink(name, dir_fd=parent_fd)
        except FileNotFoundError:
            pass  # the step removed it
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EBUSY):
                return False  # the step put content there: it is part of the layer now
            raise SandboxError(f"cannot remove mount point {c.path}: {e.strerror}") from e
        return True


def _refuse_kernel(path: str, parts: tuple[str, ...]) -> None:
    """Refuse a mount point inside /proc or /sys (the stubs of those two themselves aside)."""
    if len(parts) > 1 and parts[0] in KERNEL_DIRS:
        where = "/" + "/".join(parts)
        raise SandboxError(f"cannot mount on {path}: it leads to {where}, inside /{parts[0]}",
                           hint="mount points inside /proc and /sys are refused, as runc "
                                "refuses those inside /proc")
