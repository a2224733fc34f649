"""Where COPY/ADD read from: a source tree, its matched sources, and their content hash.

A ``SourceTree`` is a directory seen as a root: the build context (with its ignore rules, and
owners reset to 0:0 because BuildKit sends the context with uid/gid 0) or another stage's root
filesystem (no ignore rules; owners kept, as BuildKit's file op keeps them without --chown).

Source paths are confined to the tree: a ``..`` that climbs above the root is refused with an
error naming the source, and symlinks are resolved as if the tree were ``/`` (a link to
``/etc`` inside a context means ``<context>/etc``), so nothing outside is ever read. A source
that is itself a link is followed (BuildKit's FollowSymlinks); links found while walking a
directory are copied as links. Excluded context paths do not exist for COPY.

Wildcards follow BuildKit: the source is split at its first component with a wildcard, the
part before is resolved, and each remaining component is matched with Go's filepath.Match;
a wildcard that matches nothing is not an error (BuildKit's AllowEmptyWildcard).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cloche.engine.dockerignore import PatternMatcher
from cloche.errors import ClocheError, UnsafePathError
from cloche.fs.gopath import go_clean, has_wildcards
from cloche.fs.gopath import match as go_match
from cloche.fs.owners import OWNER_XATTR, owner_of
from cloche.fs.paths import resolve_in_root

if TYPE_CHECKING:
    from cloche.engine.fastwalk import Listing, Prefetch

__all__ = ["FileDigest", "MatchedSource", "inline_tree", "SourceNotFoundError", "SourceTree", "WalkEntry",
           "content_hash",
           "match_sources", "sha256_file", "walk_source"]


class SourceNotFoundError(ClocheError, ValueError):
    """A COPY/ADD source that does not exist in its tree (or is excluded by .dockerignore)."""

    def __init__(self, message: str, *, source: str, tree: str) -> None:
        super().__init__(message)
        self.source = source
        self.tree = tree


@dataclass(frozen=True)
class SourceTree:
    """A directory COPY/ADD reads from, seen as a root."""

    root: Path
    ignore: PatternMatcher = field(default_factory=PatternMatcher)
    reset_owner: bool = False
    label: str = "build context"

    def __post_init__(self) -> None:
        # Paths met while walking are compared with the root: it must be absolute and real.
        object.__setattr__(self, "root", Path(self.root).resolve())

    @classmethod
    def stage(cls, root: Path, name: str) -> SourceTree:
        """Another stage's (or image's) root filesystem: no ignore rules, owners kept."""
        return cls(root.resolve(), PatternMatcher(), False, f"stage {name}")

    def excluded(self, rel: str, *, is_dir: bool = False) -> bool:
        """Whether ``rel`` is absent from the tree because of the ignore rules.

        An excluded directory is still there when an exception re-includes something below
        it (BuildKit then sends the directory with just those contents).
        """
        if not self.ignore.patterns or rel in ("", ".") or not self.ignore.matches(rel):
            return False
        return not (is_dir and self.ignore.may_include_below(rel))

    def rel(self, host: Path) -> str:
        """The tree-relative ``/``-separated path of a host path below the root."""
        return "" if host == self.root else str(host.relative_to(self.root))


@dataclass(frozen=True)
class MatchedSource:
    """One source after wildcard expansion: where it is and what it is."""

    spec: str          # the source as written (after expansion)
    rel: str           # path relative to the tree root, symlinks resolved
    host: Path
    is_dir: bool
    base: str          # the part of ``rel`` before the first wildcard
    written: str = ""  # the path as named (before links are resolved): --parents keeps it


def inline_tree(documents: Sequence[tuple[str, bytes]], into: Path) -> SourceTree:
    """A source tree holding COPY/ADD heredoc documents (``COPY <<EOF /dest``), by name.

    BuildKit writes each document into an empty filesystem with mode 0644 (owner 0:0) and
    copies it from there; ``into`` must be an empty private directory. The engine then calls
    ``copy_into`` with the document names as the sources.
    """
    tree = SourceTree(into, label="heredoc")
    for name, data in documents:
        if "/" in name or name in ("", ".", ".."):
            raise UnsafePathError(f"heredoc name {name!r} is not a plain file name")
        fd = os.open(tree.root / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tree.root / name, 0o644)
    return tree


def _confine_lexically(tree: SourceTree, spec: str) -> str:
    """``spec`` made relative to the tree root; a ``..`` above the root is an error."""
    depth = 0
    for part in spec.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                raise UnsafePathError(
                    f"source {spec!r} is outside of the {tree.label}: '..' climbs above its root",
                    hint="COPY and ADD can only read files inside the build context")
        elif part not in ("", "."):
            depth += 1
    cleaned = go_clean("/" + spec).lstrip("/")
    return cleaned


def _resolve(tree: SourceTree, rel: str) -> Path:
    return resolve_in_root(tree.root, rel)


def _not_found(tree: SourceTree, spec: str, why: str = "") -> SourceNotFoundError:
    return SourceNotFoundError(f"source {spec!r} not found in the {tree.label}{why}",
                               source=spec, tree=tree.label)


def match_sources(tree: SourceTree, spec: str) -> list[MatchedSource]:
    """The sources ``spec`` names in ``tree`` (one, or the wildcard's matches in walk order)."""
    rel = _confine_lexically(tree, spec)
    parts = [p for p in rel.split("/") if p]
    cut = next((i for i, p in enumerate(parts) if has_wildcards(p)), len(parts))
    if cut == len(parts):
        host = _resolve(tree, rel)
        try:
            st = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            link_note = ""
            if host != tree.root.joinpath(*parts):
                link_note = f" (a symlink on the way resolves to /{tree.rel(host)} inside the tree)"
            raise _not_found(tree, spec, link_note) from None
        real = tree.rel(host)
        if tree.excluded(real, is_dir=stat.S_ISDIR(st.st_mode)):
            raise _not_found(tree, spec, " (excluded by .dockerignore)")
        return [MatchedSource(spec, real, host, stat.S_ISDIR(st.st_mode), real, rel)]
    base_rel = "/".join(parts[:cut])
    base_host = _resolve(tree, base_rel)
    out: list[MatchedSource] = []
    _expand(tree, spec, base_host, parts[cut:], tree.rel(base_host), out)
    return out


def _expand(tree: SourceTree, spec: str, dir_host: Path, rest: list[str], base: str,
            out: list[MatchedSource]) -> None:
    """The matches of the wildcard components ``rest`` below ``dir_host``, depth first in
    name order; iterative (a pattern may have as many components as a line holds)."""
    frames: list[tuple[Iterator[str], Path, list[str]]] = []
    names = _sorted_names(dir_host)
    if names is not None:
        frames.append((iter(names), dir_host, rest))
    while frames:
        names_left, dir_host, rest = frames[-1]
        name = next(names_left, None)
        if name is None:
            frames.pop()
            continue
        if not go_match(rest[0], name):
            continue
        host = dir_host / name
        rel = tree.rel(host)
        st = os.lstat(host)
        if tree.excluded(rel, is_dir=stat.S_ISDIR(st.st_mode)):
            continue
        if len(rest) > 1:
            if stat.S_ISDIR(st.st_mode) and (below := _sorted_names(host)) is not None:
                frames.append((iter(below), host, rest[1:]))
            continue
        if stat.S_ISLNK(st.st_mode):  # a matched link is followed, inside the tree
            host = _resolve(tree, rel)
            try:
                st = os.lstat(host)
            except (FileNotFoundError, NotADirectoryError):
                # BuildKit follows each match and fails on a dangling one ("not found")
                raise _not_found(tree, spec, f" (the match {rel!r} is a symlink that resolves "
                                 f"to /{tree.rel(host)}, which does not exist)") from None
        out.append(MatchedSource(spec, tree.rel(host), host, stat.S_ISDIR(st.st_mode), base, rel))


def _sorted_names(dir_host: Path) -> list[str] | None:
    try:
        return sorted(os.listdir(dir_host))
    except (FileNotFoundError, NotADirectoryError):
        return None


@dataclass(frozen=True)
class WalkEntry:
    """One path met while walking a source: relative to the source, with its lstat.

    ``path`` is the host path as a string (building a Path for each of 40,000 context files
    costs more than hashing them from the stat cache); ``host`` makes the Path when needed.
    """

    rel: str
    path: str
    st: os.stat_result
    implied: bool = False  # an excluded directory kept only because something below is included

    @property
    def host(self) -> Path:
        return Path(self.path)


def walk_source(tree: SourceTree, src: MatchedSource,
                excludes: PatternMatcher | None = None) -> Iterator[WalkEntry]:
    """Everything below a directory source, parents before children, names sorted.

    Paths excluded by the tree's ignore rules or by ``excludes`` (COPY --exclude, matched
    relative to the source) are skipped; an excluded directory is still entered when an
    exception could re-include something below it, and is then yielded as ``implied``.
    """
    yield from _walk(tree, src.host, "", excludes)


@dataclass
class _WalkFrame:
    """One directory being walked: its entries left, and, for an excluded directory entered
    because an exception may re-include something below, its entry, yielded (as ``implied``)
    just before the first thing below it is."""

    entries: Iterator[os.DirEntry[str]]
    prefix: str
    implied: WalkEntry | None = None


def _scan_sorted(dir_host: str) -> Iterator[os.DirEntry[str]]:
    with os.scandir(dir_host) as it:
        return iter(sorted(it, key=lambda e: e.name))


def _walk(tree: SourceTree, dir_host: Path | str, prefix: str,
          excludes: PatternMatcher | None) -> Iterator[WalkEntry]:
    """Depth first, names sorted, parents first; iterative, for trees of any depth."""
    ignore = tree.ignore if tree.ignore.patterns else None
    extra = excludes if excludes is not None and excludes.patterns else None
    root = str(tree.root)
    cut = 1 if root == "/" else len(root) + 1
    stack = [_WalkFrame(_scan_sorted(str(dir_host)), prefix)]
    waiting: list[_WalkFrame] = []  # frames (outermost first) whose implied entry is not out
    while stack:
        frame = stack[-1]
        entry = next(frame.entries, None)
        if entry is None:
            stack.pop()
            if waiting and waiting[-1] is frame:  # nothing below it was yielded: dropped
                waiting.pop()
            continue
        name = entry.name
        rel = f"{frame.prefix}/{name}" if frame.prefix else name
        st = entry.stat(follow_symlinks=False)
        is_dir = stat.S_ISDIR(st.st_mode)
        if ignore is not None or extra is not None:
            hidden = [(m, r) for m, r in ((ignore, entry.path[cut:]), (extra, rel))
                      if m is not None and m.matches(r)]
            if hidden:
                if is_dir and all(m.may_include_below(r) for m, r in hidden):
                    below = _WalkFrame(_scan_sorted(entry.path), rel,
                                       WalkEntry(rel, entry.path, st, implied=True))
                    stack.append(below)
                    waiting.append(below)
                continue
        for parent in waiting:
            assert parent.implied is not None
            yield parent.implied
        waiting.clear()
        yield WalkEntry(rel, entry.path, st)
        if is_dir:
            stack.append(_WalkFrame(_scan_sorted(entry.path), rel))


_TYPE_CHARS = {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFCHR: "c",
               stat.S_IFBLK: "b", stat.S_IFIFO: "p"}


def _type_char(mode: int) -> str:
    return _TYPE_CHARS.get(stat.S_IFMT(mode), "s")


FileDigest = Callable[[Path, os.stat_result], str]


class EntryCache(Protocol):
    """Remembers an entry's description while its stat says it is unchanged (see
    ``cloche.engine.cache.StatCache``): chmod, chown, xattr and content changes all move ctime."""

    def describe(self, host: str, st: os.stat_result, compute: Callable[[], str]) -> str: ...


def sha256_file(host: Path, st: os.stat_result) -> str:
    """The hex sha256 of a regular file's content, read without following a link."""
    digest = hashlib.sha256()
    fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(tree: SourceTree, host: str | Path, st: os.stat_result,
              file_digest: FileDigest) -> str:
    """Everything the cache key covers of one entry but its name."""
    uid, gid = (0, 0) if tree.reset_owner else owner_of(host, st)
    kind = _type_char(st.st_mode)
    fields = [kind, oct(stat.S_IMODE(st.st_mode)), str(uid), str(gid)]
    if kind == "f":
        fields.append(str(st.st_size))
        fields.append(file_digest(Path(host), st))
    elif kind == "l":
        fields.append(os.readlink(host))
    elif kind in "cb":
        fields.append(f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}")
    try:
        for xname in sorted(os.listxattr(host, follow_symlinks=False)):
            if xname.startswith(("user.", "security.")) and xname != OWNER_XATTR:
                fields.append(f"x:{xname}=" + os.getxattr(host, xname, follow_symlinks=False).hex())
    except OSError:
        pass
    return "\0".join(fields)


def _record(h: hashlib._Hash, tree: SourceTree, name: str, host: str | Path,
            st: os.stat_result, file_digest: FileDigest, cache: EntryCache | None) -> None:
    if cache is None:
        text = _describe(tree, host, st, file_digest)
    else:
        text = cache.describe(str(host), st, lambda: _describe(tree, host, st, file_digest))
    h.update((name + "\0" + text + "\n").encode("utf-8", "surrogateescape"))


def content_hash(tree: SourceTree, specs: Sequence[str], *, excludes: Sequence[str] = (),
                 file_digest: FileDigest = sha256_file, cache: EntryCache | None = None,
                 prefetch: Prefetch | None = None) -> str:
    """``sha256:...`` over what COPY/ADD of ``specs`` would read from ``tree``, for the cache.

    Covers each matched path, its type, permission bits, owner (as COPY would see it), size,
    content, link target and xattrs, in a stable order; never mtimes, ctimes or inode numbers,
    so touching a file does not invalidate the cache (BuildKit's rule). ``file_digest`` reads
    a file's content hash; the build cache can pass one backed by a stat cache (device, inode,
    size, mtime, ctime) so that unchanged files are not read again.
    """
    h = hashlib.sha256()
    exclude_matcher = PatternMatcher.from_rules(tuple(excludes)) if excludes else None
    for spec in specs:
        h.update(f"source\0{spec}\n".encode("utf-8", "surrogateescape"))
        for src in match_sources(tree, spec):
            st = os.lstat(src.host)
            _record(h, tree, f"={src.rel}", src.host, st, file_digest, cache)
            if not src.is_dir:
                continue
            # A directory's entries go into a hash of their own, so that the stat cache can
            # remember it for an unchanged listing (see StatCache.tree).
            sub = hashlib.sha256()
            listing = _fast_listing(tree, src, exclude_matcher, cache, prefetch)
            if listing is not None:
                key = f"{listing.digest}:{tree.reset_owner}:{src.rel}"
                known = cache.tree(key)  # type: ignore[union-attr]
                if known is None:
                    prefix = f"{src.rel}/" if src.rel else ""
                    base = str(src.host)
                    for rel, stamp in listing.entries:
                        host = f"{base}/{rel}"
                        text = cache.describe_stamp(  # type: ignore[union-attr]
                            host, stamp, lambda host=host: _describe(tree, host, os.lstat(host),
                                                                     file_digest))
                        sub.update((prefix + rel + "\0" + text + "\n").encode(
                            "utf-8", "surrogateescape"))
                    known = sub.hexdigest()
                    cache.remember_tree(key, known)  # type: ignore[union-attr]
                h.update(f"tree\0{known}\n".encode())
                continue
            for entry in walk_source(tree, src, exclude_matcher):
                _record(sub, tree, f"{src.rel}/{entry.rel}" if src.rel else entry.rel,
                        entry.path, entry.st, file_digest, cache)
            h.update(f"tree\0{sub.hexdigest()}\n".encode())
    return "sha256:" + h.hexdigest()


def _fast_listing(tree: SourceTree, src: MatchedSource, excludes: PatternMatcher | None,
                  cache: EntryCache | None, prefetch: Prefetch | None = None) -> Listing | None:
    """The find-based listing of a directory source, when it gives the same answer as the
    Python walk: a stat cache to answer from, and no ignore rule or --exclude to apply."""
    if cache is None or not hasattr(cache, "describe_stamp"):
        return None
    if (excludes is not None and excludes.patterns) or tree.ignore.patterns:
        return None
    from cloche.engine.fastwalk import list_tree

    listed = prefetch.take(src.host) if prefetch is not None else None
    if listed is None:
        listed = list_tree(src.host)  # a few milliseconds for a small directory
    return listed
