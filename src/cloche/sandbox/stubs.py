"""Mount points the sandbox creates in a rootfs, and their removal after the step.

A scratch-based stage has no /proc, /dev or /sys, many images have no /etc/hosts, and a
``--mount`` target rarely exists. The sandbox must create them to mount over them, but they
are not the step's output and must not land in its layer (BuildKit removes its "mount stubs"
the same way). Each created path is recorded; afterwards it is removed if it is still an
empty stub, and the parent's times are put back when the step did not touch the parent,
so that a copied-up parent directory compares equal to the lower one.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cloche.errors import SandboxError
from cloche.fs.paths import resolve_in_root


@dataclass(frozen=True)
class _Created:
    path: str            # inside the container
    host: Path
    is_dir: bool
    parent_times: tuple[int, int]        # parent's (atime_ns, mtime_ns) before creation
    parent_mtime_after: int              # parent's mtime_ns right after creation


@dataclass
class Stubs:
    """The stubs created in one rootfs for one step (mutable while the step is prepared)."""

    rootfs: Path
    created: list[_Created] = field(default_factory=list)

    def ensure(self, path: str, *, is_dir: bool) -> Path:
        """The host path of ``path`` in the rootfs, created (with parents) when missing.

        Symlinks on the way are followed inside the rootfs; what is missing is created at
        the place they lead to, and recorded under that (resolved) path.
        """
        host = resolve_in_root(self.rootfs, path)
        parts = host.relative_to(self.rootfs).parts
        for i in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:i])
            current = self.rootfs.joinpath(*parts[:i])
            last = i == len(parts)
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                self._create(sub, current, is_dir=is_dir or not last)
                continue
            if not last and not stat.S_ISDIR(st.st_mode):
                raise SandboxError(f"cannot mount on {path}: {sub} in the image is not a directory")
        return host

    def _create(self, path: str, host: Path, *, is_dir: bool) -> None:
        parent = host.parent
        before = os.stat(parent)
        try:
            if is_dir:
                os.mkdir(host)
                os.chmod(host, 0o755)  # whatever the caller's umask
            else:
                os.close(os.open(host, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644))
        except OSError as e:
            raise SandboxError(f"cannot create mount point {path} in {self.rootfs}: "
                               f"{e.strerror}") from e
        after = os.stat(parent)
        self.created.append(_Created(path, host, is_dir, (before.st_atime_ns, before.st_mtime_ns),
                                     after.st_mtime_ns))

    def remove(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Remove the stubs that are still empty, newest first.

        Returns the removed stubs, and the existing directories that held one and that the
        step did not touch (their times are restored; an overlay may have copied them up,
        see ``overlay.prune_copied_up``), deepest first.
        """
        removed: list[str] = []
        parents: list[str] = []
        created = {c.path for c in self.created}
        for c in reversed(self.created):
            try:
                untouched = os.stat(c.host.parent).st_mtime_ns == c.parent_mtime_after
            except FileNotFoundError:
                continue
            try:
                if c.is_dir:
                    os.rmdir(c.host)
                else:
                    st = os.lstat(c.host)
                    if not stat.S_ISREG(st.st_mode) or st.st_size != 0:
                        continue  # the step replaced it with something real: keep it
                    os.unlink(c.host)
            except FileNotFoundError:
                pass  # the step removed it
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EBUSY):
                    continue  # the step put content there: it is part of the layer now
                raise SandboxError(f"cannot remove mount point {c.path}: {e.strerror}") from e
            removed.append(c.path)
            if untouched:  # the step did not change the parent: give it its old times back
                os.utime(c.host.parent, ns=c.parent_times, follow_symlinks=False)
                parent = "/" + str(c.host.parent.relative_to(self.rootfs)).lstrip(".")
                if parent != "/" and parent not in created and parent not in parents:
                    parents.append(parent)
        self.created.clear()
        parents.sort(key=lambda p: p.count("/"), reverse=True)
        return tuple(reversed(removed)), tuple(parents)
