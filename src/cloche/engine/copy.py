"""COPY (and ADD of local sources) into a stage's root filesystem, with BuildKit's semantics.

The engine mounts the stage's rootfs (the overlay merged directory) and calls ``copy_into``;
the overlay's upper directory then becomes the layer. The rules, from BuildKit's
dockerfile2llb and its file op (tonistiigi/fsutil copy):

- The destination is resolved inside the rootfs as if chrooted; a relative one is under
  WORKDIR; a trailing ``/`` (or ``.``) makes it a directory; several sources need one (the
  legacy builder's error, which cloche keeps; BuildKit copies them in turn onto the same
  file), counted after expansion: a wildcard matching nothing is no source, as in BuildKit
  (``COPY a* b dest`` copies b to dest when nothing matches a*); a wildcard matching several
  files onto a file path: the last one wins, as in BuildKit.
- Missing parents of the destination (and a directory source's missing destination) are
  created 0755, or with an octal --chmod's mode, owned by the --chown user when given
  (BuildKit's MkdirAll gets the same chowner and mode) else by root, with the current time.
- A directory source copies its contents. A destination directory that already exists keeps
  its own metadata; directories inside the copy take the source's (mode, owner, times).
- A file source goes into the destination directory under its own name, or becomes the
  destination path. A file replaces a file or link; a file over a directory and a directory
  over a non-directory (even a symlink to a directory) are errors, as in BuildKit.
- Ownership: --chown when given; else 0:0 from the build context (BuildKit sends the context
  with uid/gid reset to 0) and the source's own uid/gid from another stage (the file op keeps
  the old owner when no user is set: ``mapUserToChowner(nil)`` returns it).
- Modes are kept unless --chmod (octal or symbolic) applies to files and directories alike;
  mtimes are kept; symlinks inside a directory are copied as links; hard links within one
  source stay hard links; xattrs (file capabilities included) are kept.
- ``--parents`` keeps each source's path (from the context root, or after a ``/./`` pivot);
  ``--exclude`` patterns (.dockerignore syntax) are matched relative to each source.
- ``--link`` yields the same files; for the engine it means copying into an empty directory
  (no dependency on the stage below, whose links are then not followed) and passing the
  stage's rootfs as ``users_root`` for --chown names.
"""

from __future__ import annotations

import os
import posixpath
import stat
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cloche.engine.chmod import ChmodSpec, parse_chmod
from cloche.engine.dockerignore import PatternMatcher
from cloche.engine.extract import extract_tar, is_tar_archive
from cloche.engine.fsutil import (
    CopyIOError,
    CopyTargetError,
    Owner,
    copy_fd_data,
    copy_fd_xattrs,
    copy_xattrs,
    mkdir_all,
    remove_for_replace,
    resolve_dest,
    set_metadata,
)
from cloche.engine.sources import MatchedSource, SourceTree, match_sources, walk_source
from cloche.errors import ClocheError
from cloche.fs.gopath import go_clean
from cloche.fs.owners import owner_of, set_owner
from cloche.fs.regular import open_regular
from cloche.fs.users import resolve_chown

COPY_WORKERS = 4
COPY_BATCH = 64  # files of one directory per worker task

__all__ = ["CopyDestinationError", "CopyRequest", "CopyResult", "copied_owner", "copy_into",
           "created_dir_mode", "destination_path"]


class CopyDestinationError(ClocheError, ValueError):
    """A COPY/ADD destination that does not fit its sources (several sources, no ``/``)."""


@dataclass(frozen=True)
class CopyRequest:
    """One COPY or ADD, after variable expansion: what to copy, where, and how."""

    sources: tuple[str, ...]
    dest: str
    workdir: str = "/"
    chown: str | None = None
    chmod: str | None = None
    parents: bool = False
    excludes: tuple[str, ...] = ()
    link: bool = False
    instruction: str = "COPY"


@dataclass(frozen=True)
class CopyResult:
    """What a copy did: sources matched, entries written, bytes of file content."""

    sources: int
    entries: int
    bytes: int


def copied_owner(chown: Owner | None, tree: SourceTree, st: os.stat_result,
                 path: str | os.PathLike[str]) -> Owner:
    """The owner a copied entry (at ``path``, lstat ``st``) gets: --chown's, else 0:0 from
    the build context (sent with owners reset, as BuildKit does), else the source's own (from
    a stage or an image, as ``cloche.fs.owners`` reads it)."""
    if chown is not None:
        return chown
    return Owner(0, 0) if tree.reset_owner else Owner(*owner_of(path, st))


def destination_path(dest: str, workdir: str) -> tuple[str, bool]:
    """The absolute clean destination, and whether it names a directory (BuildKit's rule)."""
    is_dir = dest in ("", ".") or dest.endswith("/") or dest.endswith("/.")
    joined = dest if dest.startswith("/") else posixpath.join("/", workdir or "/", dest)
    return go_clean(joined), is_dir


def created_dir_mode(chmod: ChmodSpec | None) -> int:
    """The mode of the directories a copy creates (the destination and its missing parents):
    an octal --chmod's permission bits, else 0755. Current BuildKit's copy (fsutil copy.Copy
    and prepareTargetDir) makes them with MkdirAll and the --chmod mode (``os.FileMode(mode)``:
    set-id and sticky bits written in octal are dropped); a symbolic --chmod leaves them 0755.
    BuildKit v0.8 (the Docker engine) made them 0755 in every case."""
    if chmod is not None and chmod.octal is not None:
        return chmod.octal & 0o777
    return 0o755


class _Copier:
    """The state of one COPY: owner rules, chmod, and the hard links already made."""

    def __init__(self, tree: SourceTree, root: Path, owner: Owner | None,
                 chmod: ChmodSpec | None) -> None:
        self.tree = tree
        self.root = root
        self.owner = owner
        self.chmod = chmod
        self.inodes: dict[tuple[int, int], Path] = {}
        self.entries = 0
        self.bytes = 0
        self.dir_times: list[tuple[Path, int]] = []
        self.fresh: set[str] = set()  # directories this copy created
        self.pool: ThreadPoolExecutor | None = None
        self.pending: list[tuple[Future[None], Path, Path]] = []
        self.batch: list[tuple[Path, os.stat_result, Path]] = []  # not yet handed to a worker
        self.targets: set[str] = set()  # paths of the pending copies

    def owner_for(self, st: os.stat_result, src: Path) -> Owner:
        return copied_owner(self.owner, self.tree, st, src)

    def display(self, target: Path) -> str:
        return "/" + str(target.relative_to(self.root)) if target != self.root else "/"

    def place(self, src: Path, st: os.stat_result, target: Path) -> None:
        """Write one entry at ``target`` (its parent exists), with the copy's metadata rules."""
        try:
            self._place(src, st, target)
        except OSError as e:
            where = self.display(target)
            raise CopyIOError(f"cannot copy {src.name!r} to {where}: {e.strerror or e}",
                              path=where) from e

    def _place(self, src: Path, st: os.stat_result, target: Path) -> None:
        mode = st.st_mode
        is_dir = stat.S_ISDIR(mode)
        if self.targets and str(target) in self.targets:
            self._drain()  # the same path copied again (several sources): the last one wins
        if str(target.parent) in self.fresh:  # in a directory this copy made: nothing to replace
            existed = False
        else:
            existed = remove_for_replace(target, self.display(target), new_is_dir=is_dir)
        self.entries += 1
        if is_dir:
            if not existed:
                os.mkdir(target, 0o700)
                self.fresh.add(str(target))
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.inodes:
                os.link(self.inodes[key], target, follow_symlinks=False)
                return
            self.bytes += st.st_size
            if st.st_nlink > 1:  # later links need it on disk: copy it now
                self._copy_file(src, st, target)
                self.inodes[key] = target
            else:
                self._submit(src, st, target)
            return
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), target)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            os.mknod(target, stat.S_IFMT(mode) | 0o600, st.st_rdev)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(target, 0o600)
        else:
            self.entries -= 1
            return  # sockets cannot be copied; BuildKit's context transfer drops them too
        is_link = stat.S_ISLNK(mode)
        new_mode = None if is_link else (
            self.chmod.apply(mode, is_dir=is_dir) if self.chmod else stat.S_IMODE(mode))
        set_metadata(target, mode=new_mode, owner=self.owner_for(st, src), mtime_ns=None)
        copy_xattrs(src, target)
        if is_dir:
            self.dir_times.append((target, st.st_mtime_ns))  # set after the contents
        else:
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def _copy_file(self, src: Path, st: os.stat_result, target: Path) -> None:
        """A regular file: content, owner, mode, xattrs and times, all through descriptors
        (a 40,000-file context pays for every path lookup saved here)."""
        src_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600)
            try:
                copy_fd_data(src_fd, out, st.st_size)
                owner = self.owner_for(st, src)
                set_owner(out, owner.uid, owner.gid)  # before chmod: chown clears set-id bits
                os.fchmod(out, self.chmod.apply(st.st_mode, is_dir=False) if self.chmod
                          else stat.S_IMODE(st.st_mode))
                copy_fd_xattrs(src_fd, out)
                os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(out)
        finally:
            os.close(src_fd)

    def _submit(self, src: Path, st: os.stat_result, target: Path) -> None:
        """Copy a file on a worker thread: the syscalls of many small files overlap (the GIL
        is released in each), which is most of the time a large context takes.

        Files go to the workers in batches of one directory: creating a file takes its
        directory's lock in the kernel, so threads writing into one directory only queue
        (and spin) behind each other, while threads in different directories run."""
        if self.batch and (len(self.batch) >= COPY_BATCH or target.parent != self.batch[0][2].parent):
            self._flush()
        self.batch.append((src, st, target))
        self.targets.add(str(target))

    def _flush(self) -> None:
        """Hand the current batch to a worker; bound the work in flight."""
        if not self.batch:
            return
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=COPY_WORKERS,
                                           thread_name_prefix="cloche-copy")
        batch, self.batch = self.batch, []
        future = self.pool.submit(self._copy_batch, batch)
        self.pending.extend((future, src, target) for src, _, target in batch)
        if len(self.pending) >= 16 * COPY_BATCH:
            self._drain(len(self.pending) // 2)

    def _copy_batch(self, batch: list[tuple[Path, os.stat_result, Path]]) -> None:
        for src, st, target in batch:
            try:
                self._copy_file(src, st, target)
            except OSError as e:
                where = self.display(target)
                raise CopyIOError(f"cannot copy {src.name!r} to {where}: {e.strerror or e}",
                                  path=where) from e

    def _drain(self, count: int | None = None) -> None:
        """Wait for the oldest ``count`` pending copies (all by default, the current batch
        included); re-raise the first failure."""
        if count is None:
            self._flush()
        count = len(self.pending) if count is None else count
        done, self.pending = self.pending[:count], self.pending[count:]
        for future, _, target in done:
            self.targets.discard(str(target))
            future.result()

    def close(self) -> None:
        """Wait for the copies handed out and stop the workers (also after an error, when
        the batch not handed out yet is dropped)."""
        self.batch.clear()
        try:
            self._drain()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
                self.pool = None

    def finish(self) -> None:
        self._drain()
        self.close()  # directory times last: creating files in a directory moves its mtime
        for path, mtime_ns in reversed(self.dir_times):
            os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        self.dir_times.clear()

    def mkdirs(self, host: Path, *, mode: int | None = None) -> None:
        """Create ``host`` and its missing parents: ``mode``, else the copy's directory mode."""
        mkdir_all(self.root, host, mode=self.dir_mode if mode is None else mode,
                  owner=self.owner)

    @property
    def dir_mode(self) -> int:
        return created_dir_mode(self.chmod)


def _parents_path(spec: str, src: MatchedSource) -> str:
    """The path --parents keeps for a source: from the root, or after a ``/./`` pivot."""
    written = src.written
    text = spec if not spec.startswith("./") else spec[2:]
    if "/./" in text:
        pivot = go_clean(text.rsplit("/./", 1)[0]).lstrip("/")
        if pivot not in ("", ".") and (written == pivot or written.startswith(pivot + "/")):
            return written[len(pivot):].lstrip("/")
    return written


def copy_into(request: CopyRequest, tree: SourceTree, root: Path, *,
              unpack: bool = False, users_root: Path | None = None,
              other_sources: int = 0) -> CopyResult:
    """Carry out ``request`` from ``tree`` into the rootfs ``root``.

    ``unpack`` is ADD's rule: a local file that is a tar (plain or compressed) is extracted
    into the destination directory instead of being copied. ``users_root`` is where --chown
    names are looked up when it is not ``root`` itself: for ``--link`` the engine copies into
    an empty directory but the names still come from the stage's /etc/passwd and /etc/group.
    ``other_sources`` counts the instruction's sources copied separately (ADD's URLs) for
    the several-sources rule.
    """
    try:
        return _copy_into(request, tree, root, unpack, users_root, other_sources)
    except OSError as e:
        name = f" ({e.filename})" if e.filename else ""
        raise CopyIOError(f"{request.instruction} to {request.dest}: {e.strerror or e}{name}",
                          path=request.dest) from e


def _copy_into(request: CopyRequest, tree: SourceTree, root: Path, unpack: bool,
               users_root: Path | None, other_sources: int) -> CopyResult:
    root = root.resolve()
    what = request.instruction
    dest, dest_is_dir = destination_path(request.dest, request.workdir)
    if not request.sources:
        raise CopyDestinationError(f"{what} needs at least one source")
    owner = Owner(*resolve_chown(users_root or root, request.chown)) if request.chown else None
    chmod = parse_chmod(request.chmod) if request.chmod else None
    excludes = PatternMatcher.from_rules(request.excludes, source="--exclude") \
        if request.excludes else None

    # --exclude patterns match paths below each source (fsutil's copy matches from the
    # source's own root), never a source itself: a file source is copied even when it matches
    matched = [(spec, m) for spec in request.sources for m in match_sources(tree, spec)]
    # Sources are counted after expansion, as BuildKit copies each one on its own and a
    # wildcard matching nothing is no source at all (AllowEmptyWildcard): ``COPY a* b dest``
    # with no a* copies b to dest.
    if len({spec for spec, _ in matched}) + other_sources > 1 and not dest_is_dir \
            and not resolve_dest(root, dest).is_dir():  # BuildKit: an existing directory will do
        raise CopyDestinationError(
            f"When using {what} with more than one source file, the destination must be a "
            f"directory and end with a / (got {request.dest!r})")
    dest_host = resolve_dest(root, dest)
    # A wildcard matching several files into a destination without '/' is not an error in
    # BuildKit: each file is copied onto the destination in turn and the last one wins.
    copier = _Copier(tree, root, owner, chmod)
    try:
        for spec, src in matched:
            # BuildKit's file op copies each source, and each match of a wildcard, on its own
            # (one fsutil copy each): hard links are kept within one, never between two
            copier.inodes.clear()
            kept = _parents_path(spec, src) if request.parents else ""
            kept_parent = _make_kept_parents(copier, src, dest, kept) if kept else dest_host
            kept_target = kept_parent / posixpath.basename(kept) if kept else dest_host
            if src.is_dir:
                target = kept_target
                if kept and not os.path.lexists(target):  # --parents: the directory itself too
                    copier.place(src.host, os.lstat(src.host), target)
                _copy_dir_contents(copier, src, target, excludes)
                continue
            if unpack and is_tar_archive(src.host):
                target = kept_parent
                copier.mkdirs(target, mode=0o755)  # BuildKit's unpack: MkdirAll 0755
                with os.fdopen(open_regular(src.host, what=f"{what} {spec}"), "rb") as raw:
                    # current BuildKit's unpack (file/unpack.go) gives every entry the
                    # --chown owner; without it the tar's owners stay (v0.8 always kept them)
                    result = extract_tar(raw, target, owner=owner, label=f"{what} {spec}")
                copier.entries += result.entries
                copier.bytes += result.bytes
                continue
            if kept:
                target = kept_target
            elif dest_is_dir or dest_host.is_dir():
                target = dest_host / posixpath.basename(src.written or src.rel)
            else:
                target = dest_host
            copier.mkdirs(target.parent)
            copier.place(src.host, os.lstat(src.host), target)
        copier.finish()
    finally:
        copier.close()
    return CopyResult(len(matched), copier.entries, copier.bytes)


def _make_kept_parents(copier: _Copier, src: MatchedSource, dest: str, kept: str) -> Path:
    """--parents: the kept directories below the destination, made like directories of the
    copy (source metadata) or left alone when they exist; returns the last one.

    As in BuildKit (which copies them from the context like any directory), a non-directory
    in the way, even a link to a directory, is an error: nothing is followed below ``dest``.
    """
    parts = kept.split("/")[:-1]
    prefix = src.written[: len(src.written) - len(kept)].rstrip("/")
    current = resolve_dest(copier.root, dest)
    copier.mkdirs(current)
    for i, part in enumerate(parts):
        target = current / part
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            source_rel = "/".join(p for p in (prefix, *parts[: i + 1]) if p)
            source_host = resolve_dest(copier.tree.root, source_rel)
            copier.place(source_host, os.lstat(source_host), target)
        else:
            if not stat.S_ISDIR(st.st_mode):
                raise CopyTargetError(f"cannot copy to non-directory: {copier.display(target)}",
                                      path=copier.display(target))
        current = target
    return current


def _copy_dir_contents(copier: _Copier, src: MatchedSource, target: Path,
                       excludes: PatternMatcher | None) -> None:
    """A directory source: its contents into ``target`` (created 0755 when missing)."""
    try:
        st = os.lstat(target)
        if not stat.S_ISDIR(st.st_mode):
            raise CopyTargetError(f"cannot copy to non-directory: {copier.display(target)}",
                                  path=copier.display(target))
    except FileNotFoundError:
        copier.mkdirs(target)
    for entry in walk_source(copier.tree, src, excludes):
        copier.place(entry.host, entry.st, target.joinpath(*entry.rel.split("/")))
