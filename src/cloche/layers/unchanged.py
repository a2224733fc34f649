"""Drop from a step's upper directory what the step did not change, as BuildKit's differ does.

overlayfs copies a directory up when anything below it changes, and a file up when it is
rewritten, even with the same bytes. Current BuildKit writes a step's layer with its overlay
differ (util/overlay): an upper entry that also exists in the lower layers is left out when it
is the same there (``sameDirent``: mode, owner, device number and file capabilities; for a
non-directory also size and mtime, and the content when both mtimes have whole seconds, as
files unpacked from a tar do); a whiteout of a path the lowers do not hold is left out; a
directory marked opaque that the lowers do not hold is an ordinary new directory. Parent
directories of what is written are still written (containerd's change writer adds them).

A directory removed and made again (``rm -rf /d && mkdir /d``) is opaque in the upper
directory, and the lowers hold it: BuildKit's differ (``checkOpaque``) then compares the
lower directory with the upper one entry by entry, and so does this: the opaque marker is
dropped, what is the same as below is left out as anywhere else, and each entry of the lower
directory the upper one lacks gets a whiteout (``Unchanged.whiteouts``, which the layer writer
adds). Directories below it that the lowers hold too are compared the same way (overlayfs
shows only their upper contents, the opaque ancestor hiding the rest). One that cannot be
compared (too deep, unreadable) is written with all its contents and an opaque marker
(``Unchanged.opaque``), which is always right.

``find_unchanged`` lists those entries once, when the step ends (it needs the step's lower
layers); the engine keeps the list beside the upper directory (``to_json``) so that a layer
written from the snapshot later (a lazy layer) leaves out the same entries. The upper
directory itself is not changed: it stays the step's snapshot as overlayfs made it (a file
copied up by ``ln`` keeps its new link count there, as in BuildKit's snapshot, while the layer
holds only the new name). A step that changed nothing gets an empty layer, as in BuildKit.

The walk holds one descriptor per level and stops pruning below ``MAX_DEPTH``; keeping an
entry is always correct, only less compact.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from cloche.errors import LayerError
from cloche.fs.owners import owner_of
from cloche.layers.diff import (
    FUSE_OPAQUE_FILE,
    _getxattr,
    fuse_whiteout_of,
    is_bookkeeping,
    is_opaque_dir,
    is_whiteout,
)

__all__ = ["Unchanged", "find_unchanged", "LowerView"]

MAX_DEPTH = 256
_CAPS = "security.capability"
_CHUNK = 1 << 16
_GONE = (errno.ENOENT, errno.ENOTDIR)


class _Unknown:
    """A lookup that failed for another reason than absence (too long, unreadable)."""


UNKNOWN = _Unknown()
Found = tuple[str, os.stat_result] | None


class LowerView:
    """Look paths up in a stack of overlay lower directories (top first) as overlayfs merges
    them: whiteouts hide (fuse-overlayfs' ``.wh.NAME`` files too), opaque directories stop the
    lookup, a non-directory ends the merge. Only components that are real directories in a
    layer are walked into, so no symlink of an image is ever followed."""

    def __init__(self, lowers: Iterable[str | os.PathLike[str]]) -> None:
        self._dirs: dict[str, list[str] | None] = {"": [os.fspath(d) for d in lowers]}

    def lookup(self, rel: str) -> Found | _Unknown:
        """(full path, lstat) of ``rel`` (no leading ``/``) in the merged lowers, None when it
        is not there, ``UNKNOWN`` when that cannot be told."""
        parts = rel.split("/")
        i = len(parts) - 1
        while i > 0 and "/".join(parts[:i]) not in self._dirs:
            i -= 1
        prefix = "/".join(parts[:i])
        layers = self._dirs[prefix]
        for j in range(i, len(parts)):
            if layers is None:
                return None
            current = f"{prefix}/{parts[j]}" if prefix else parts[j]
            found: tuple[str, os.stat_result] | None = None
            below: list[str] = []
            for top in layers:
                full = os.path.join(top, current)
                try:
                    st = os.lstat(full)
                except OSError as e:
                    if e.errno not in _GONE:
                        return UNKNOWN
                    if _fuse_whiteout_in(top, current):
                        break
                    continue
                if is_whiteout(full, st):
                    break
                if found is None:
                    found = (full, st)
                if not stat.S_ISDIR(st.st_mode) or not stat.S_ISDIR(found[1].st_mode):
                    break
                below.append(top)
                if is_opaque_dir(full):
                    break
            if j == len(parts) - 1:
                return found
            if found is None or not stat.S_ISDIR(found[1].st_mode):
                self._dirs[current] = None
                return None
            self._dirs[current] = below
            layers, prefix = below, current
        return None  # not reached: the loop returns at the last part

    def names(self, rel: str) -> set[str] | _Unknown:
        """The names in the merged lower directory ``rel`` (which lookup found a directory):
        what its layers hold, less what a higher layer deletes, never bookkeeping."""
        if rel not in self._dirs:
            self.lookup(f"{rel}/{FUSE_OPAQUE_FILE}")  # records the layers of ``rel``
        if rel not in self._dirs:
            return UNKNOWN
        present: set[str] = set()
        hidden: set[str] = set()
        for top in self._dirs[rel] or ():
            path = os.path.join(top, rel)
            try:
                listing = os.listdir(path)
            except OSError as e:
                if e.errno in _GONE:
                    continue
                return UNKNOWN
            deleted: set[str] = set()
            for name in listing:
                full = os.path.join(path, name)
                try:
                    st = os.lstat(full)
                except OSError:
                    return UNKNOWN
                target = fuse_whiteout_of(name, st)
                if target is not None:
                    deleted.add(target)
                elif is_whiteout(full, st):
                    deleted.add(name)
                elif not is_bookkeeping(name, full, st) and name not in hidden:
                    present.add(name)
            hidden |= deleted
        return present


def _fuse_whiteout_in(top: str, rel: str) -> bool:
    """Whether layer ``top`` deletes ``rel`` with fuse-overlayfs' ``.wh.NAME`` file."""
    parent, _, name = rel.rpartition("/")
    try:
        st = os.lstat(os.path.join(top, parent, ".wh." + name))
    except OSError:
        return False
    return fuse_whiteout_of(".wh." + name, st) is not None


def _same_content(a: str, b: str) -> bool:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fa = os.open(a, flags)
    try:
        fb = os.open(b, flags)
        try:
            while True:
                ca, cb = os.read(fa, _CHUNK), os.read(fb, _CHUNK)
                if ca != cb:
                    return False
                if not ca:
                    return True
        finally:
            os.close(fb)
    finally:
        os.close(fa)


def same_entry(base: str, base_st: os.stat_result, upper: str, st: os.stat_result) -> bool:
    """BuildKit's sameDirent: whether the upper entry changes nothing of the lower one."""
    if (base_st.st_mode, base_st.st_rdev) != (st.st_mode, st.st_rdev) or \
            owner_of(base, base_st) != owner_of(upper, st):
        return False
    if _getxattr(base, _CAPS) != _getxattr(upper, _CAPS):
        return False
    if stat.S_ISDIR(st.st_mode):
        return True
    if base_st.st_size != st.st_size:
        return False
    (s1, n1), (s2, n2) = divmod(base_st.st_mtime_ns, 10**9), divmod(st.st_mtime_ns, 10**9)
    if s1 != s2 or n1 != n2:
        return False
    if n1 != 0:
        return True  # same nanoseconds: nothing was rewritten
    if stat.S_ISLNK(st.st_mode):
        return os.readlink(base) == os.readlink(upper)
    if st.st_size == 0:
        return True
    if not stat.S_ISREG(st.st_mode):
        return False
    return _same_content(base, upper)


@dataclass(frozen=True)
class Unchanged:
    """What a layer written from an upper directory leaves out (paths relative to it)."""

    skip: frozenset[str] = field(default_factory=frozenset)  # files, links, whiteouts
    parents_only: frozenset[str] = field(default_factory=frozenset)  # dirs: only above a change
    not_opaque: frozenset[str] = field(default_factory=frozenset)  # opaque dirs written without
    # what the layer adds: a whiteout for each of these paths (lower entries a directory made
    # again lacks), and an opaque marker on these directories (ones that could not be compared)
    whiteouts: frozenset[str] = field(default_factory=frozenset)
    opaque: frozenset[str] = field(default_factory=frozenset)

    def to_json(self) -> bytes:
        return json.dumps({"skip": sorted(self.skip), "parents_only": sorted(self.parents_only),
                           "not_opaque": sorted(self.not_opaque),
                           "whiteouts": sorted(self.whiteouts),
                           "opaque": sorted(self.opaque)}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Unchanged:
        doc = json.loads(data)
        return cls(frozenset(doc["skip"]), frozenset(doc["parents_only"]),
                   frozenset(doc["not_opaque"]), frozenset(doc.get("whiteouts", ())),
                   frozenset(doc.get("opaque", ())))


def find_unchanged(upper: str | os.PathLike[str], lowers: Iterable[str | os.PathLike[str]]
                   ) -> Unchanged:
    """The entries of ``upper`` (unmounted) that change nothing of ``lowers``."""
    view = LowerView(lowers)
    found = _Found(set(), set(), set(), set(), set())
    root = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    # (descriptor, path, names left, whether the lower directory is hidden by the upper one)
    stack: list[tuple[int, str, list[str], bool]] = [(root, "", sorted(os.listdir(root)), False)]
    try:
        while stack:
            fd, rel, names, hidden = stack[-1]
            if not names:
                stack.pop()
                os.close(fd)
                continue
            name = names.pop()
            child = f"{rel}/{name}" if rel else name
            frame = _visit(view, fd, child, name, len(stack) < MAX_DEPTH, hidden, found)
            if frame is not None:
                stack.append(frame)
    except OSError as e:
        raise LayerError(f"cannot compare the step's changes with its lower layers: "
                         f"{e.filename or upper}: {e.strerror or e}") from e
    finally:
        for fd, *_ in stack:
            os.close(fd)
    return Unchanged(*(frozenset(s) for s in found))


class _Found(NamedTuple):
    skip: set[str]
    parents_only: set[str]
    not_opaque: set[str]
    whiteouts: set[str]
    opaque: set[str]


def _visit(view: LowerView, fd: int, rel: str, name: str, descend: bool, hidden: bool,
           found: _Found) -> tuple[int, str, list[str], bool] | None:
    """Sort one upper entry into ``found``; the frame to walk into for a directory.
    ``hidden``: its parent hides the lower directory (opaque, or below an opaque one)."""
    skip, parents_only, not_opaque = found.skip, found.parents_only, found.not_opaque
    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    here = f"/proc/self/fd/{fd}/{name}"
    if is_bookkeeping(name, here, st):
        return None  # never written (layers/diff.py)
    deleted = fuse_whiteout_of(name, st)
    if deleted is not None:  # fuse-overlayfs' whiteout of a sibling
        parent = rel.rpartition("/")[0]
        base = view.lookup(f"{parent}/{deleted}" if parent else deleted)
        if base is None:
            skip.add(rel)
        return None
    base = view.lookup(rel)
    if isinstance(base, _Unknown):
        if hidden and stat.S_ISDIR(st.st_mode):
            found.opaque.add(rel)  # kept whole, hiding whatever a lower holds there
        return None  # keep what cannot be compared
    if is_whiteout(here, st):
        if base is None:
            skip.add(rel)  # deletes what no lower holds: nothing
        return None
    if not stat.S_ISDIR(st.st_mode):
        if base is not None and same_entry(base[0], base[1], here, st):
            skip.add(rel)
        return None
    base_is_dir = base is not None and stat.S_ISDIR(base[1].st_mode)
    opaque = is_opaque_dir(here)
    if base_is_dir and (opaque or hidden):
        return _replaced(view, fd, rel, name, base, st, opaque, descend, found)  # type: ignore[arg-type]
    if opaque:
        # a new directory: nothing below it to hide. Walked on, as nothing in it is in the
        # lowers either: fuse-overlayfs marks every directory it makes opaque, and those
        # inside are new too (a deleted entry in it is written as a whiteout of nothing)
        not_opaque.add(rel)
    if not descend:
        return None
    if base_is_dir and same_entry(base[0], base[1], here, st):  # type: ignore[index]
        parents_only.add(rel)
    child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    return child, rel, sorted(os.listdir(child)), False


def _replaced(view: LowerView, fd: int, rel: str, name: str, base: tuple[str, os.stat_result],
              st: os.stat_result, opaque: bool, descend: bool, found: _Found
              ) -> tuple[int, str, list[str], bool] | None:
    """An upper directory that hides the lower one at its path (opaque, or inside one):
    compared with it entry by entry, as BuildKit's differ does; a whiteout for each lower
    entry it lacks. One that cannot be compared stays (or becomes) opaque, all kept."""
    if not descend:
        if not opaque:
            found.opaque.add(rel)
        return None
    lower = view.names(rel)
    if isinstance(lower, _Unknown):
        if not opaque:
            found.opaque.add(rel)
        return None
    child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    try:
        names = os.listdir(child)
        kept = set(names)
        for entry in names:  # fuse-overlayfs' own whiteouts name what they delete
            target = fuse_whiteout_of(entry, os.stat(entry, dir_fd=child, follow_symlinks=False))
            if target is not None:
                kept.add(target)
    except BaseException:
        os.close(child)
        raise
    gone = lower - kept
    if opaque:
        found.not_opaque.add(rel)
    found.whiteouts.update(f"{rel}/{entry}" for entry in gone)
    if not gone and same_entry(base[0], base[1], f"/proc/self/fd/{fd}/{name}", st):
        found.parents_only.add(rel)
    return child, rel, sorted(names), True
