"""COPY of a directory straight into a layer, without writing the files into the step first.

The usual COPY writes every file into the step's overlay upper directory, then reads them all
back to make the layer. When nothing in the build will look at the stage's files after the
step (the last filesystem step of the target stage), the files in the upper directory are only
a detour: this module lists the tar entries that the upper directory would have held, and the
layer is written from the sources directly. On a 40,000-file context that saves creating
40,000 inodes and walking them again.

The step's upper directory then stays empty, with a marker naming the layer; the workspace
unpacks the layer into it the first time a later build stacks a step on it (a cache hit
followed by a new instruction). The entries are those of the overlay diff, rule for rule:

- existing ancestors of the destination are copied up by overlayfs with their own metadata;
  the deepest one gets a new mtime (a child was created in it);
- missing directories up to the destination are made 0755 (an octal --chmod's mode, as
  ``copy.created_dir_mode``), owned by the --chown user or root;
- each entry below takes the source's mode (or --chmod), owner (--chown, or 0:0 from the build
  context, or the source's own from a stage), mtime and file capabilities (the only xattr a
  layer keeps); hard links within the source stay hard links; sockets are skipped.

Anything less plain (a destination that exists and is not empty, a link on the way, several
sources, a file source, devices, --parents, --link, ADD) returns None: the caller copies as
usual.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from pathlib import Path
from typing import TypedDict

from cloche.engine.chmod import ChmodSpec, parse_chmod
from cloche.engine.copy import CopyRequest, copied_owner, created_dir_mode, destination_path
from cloche.engine.dockerignore import PatternMatcher
from cloche.engine.fsutil import Owner
from cloche.engine.sources import MatchedSource, SourceTree, match_sources, walk_source
from cloche.errors import ClocheError
from cloche.fs.tarentry import EntryType, TarEntry
from cloche.fs.users import resolve_chown
from cloche.layers.tree import LAYER_XATTRS, TreeScanner, read_xattrs

Pair = tuple[TarEntry, "str | None"]

__all__ = ["direct_entries"]


class _Common(TypedDict):
    """The fields every entry of the copy has, whatever its type."""

    path: str
    uid: int
    gid: int
    mtime: int
    xattrs: tuple[tuple[str, bytes], ...]


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    """What the copy would carry over and the layer keep (``LAYER_XATTRS``)."""
    return tuple(x for x in read_xattrs(path) if x[0] in LAYER_XATTRS)


def direct_entries(request: CopyRequest, tree: SourceTree, merged: Path) -> list[Pair] | None:
    """The layer entries of ``request`` copied onto the stage mounted at ``merged``, in tar
    order, or None when the copy is not a plain directory copy (see the module's rules)."""
    if request.instruction != "COPY" or request.link or request.parents \
            or len(request.sources) != 1:
        return None
    try:
        matched = match_sources(tree, request.sources[0])
        owner = Owner(*resolve_chown(merged, request.chown)) if request.chown else None
        chmod = parse_chmod(request.chmod) if request.chmod else None
        excludes = PatternMatcher.from_rules(request.excludes, source="--exclude") \
            if request.excludes else None
    except ClocheError:
        return None  # the usual copy reports it, located
    if len(matched) != 1 or not matched[0].is_dir:
        return None
    dest, _ = destination_path(request.dest, request.workdir)
    parts = [p for p in dest.split("/") if p]
    if not parts:
        return None  # into / itself: merging with what is there
    now = int(time.time())
    pairs: list[Pair] = []
    existing = 0  # how many leading components exist (as real directories)
    lower = TreeScanner(merged)  # copied up by overlayfs: the entries its diff would hold
    for i in range(len(parts)):
        rel = "/".join(parts[:i + 1])
        host = os.path.join(merged, rel)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            break
        if not stat.S_ISDIR(st.st_mode):
            return None  # a link or a file on the way: the usual copy resolves or refuses it
        ancestor = lower.entry_for(rel, host, st)
        if ancestor is None:
            return None
        pairs.append((ancestor, None))
        existing += 1
    if existing == len(parts) and os.listdir(os.path.join(merged, *parts)):
        return None  # files to merge with or replace: the usual copy
    for i in range(existing, len(parts)):
        pairs.append((TarEntry(path="/".join(parts[:i + 1]), type=EntryType.DIR,
                               mode=created_dir_mode(chmod),
                               uid=owner.uid if owner else 0, gid=owner.gid if owner else 0,
                               mtime=now), None))
    if existing:  # the deepest existing directory gets a child: a new mtime
        deepest = pairs[existing - 1][0]
        pairs[existing - 1] = (dataclasses.replace(deepest, mtime=now), None)
    below = _below(tree, matched[0], excludes, "/".join(parts), owner, chmod)
    if below is None:
        return None
    if not below and existing == len(parts):
        return None  # nothing copied into an existing directory: no change, no layer
    return pairs + below


def _below(tree: SourceTree, src: MatchedSource, excludes: PatternMatcher | None, prefix: str,
           owner: Owner | None, chmod: ChmodSpec | None) -> list[Pair] | None:
    """The entries for everything below the source directory, or None (devices)."""
    entries = []
    for entry in walk_source(tree, src, excludes):
        mode = entry.st.st_mode
        if stat.S_ISSOCK(mode):
            continue  # not copied (BuildKit's context transfer drops them too)
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            return None
        entries.append(entry)
    entries.sort(key=lambda e: os.fsencode(e.rel).split(b"/"))
    links: dict[tuple[int, int], str] = {}
    pairs: list[Pair] = []
    for entry in entries:
        st = entry.st
        mode = st.st_mode
        is_dir = stat.S_ISDIR(mode)
        path = f"{prefix}/{entry.rel}" if prefix else entry.rel
        who = copied_owner(owner, tree, st, entry.path)
        common = _Common(path=path, uid=who.uid, gid=who.gid,
                         mtime=st.st_mtime_ns // 1_000_000_000, xattrs=_xattrs(entry.path))
        if stat.S_ISLNK(mode):
            pairs.append((TarEntry(type=EntryType.SYMLINK, mode=0o777,
                                   linkname=os.readlink(entry.path), **common), None))
            continue
        perms = chmod.apply(mode, is_dir=is_dir) if chmod else stat.S_IMODE(mode)
        if is_dir:
            pairs.append((TarEntry(type=EntryType.DIR, mode=perms, **common), None))
        elif stat.S_ISFIFO(mode):
            pairs.append((TarEntry(type=EntryType.FIFO, mode=perms, **common), None))
        else:
            key = (st.st_dev, st.st_ino)
            first = links.get(key) if st.st_nlink > 1 else None
            if first is not None:
                pairs.append((TarEntry(type=EntryType.HARDLINK, mode=perms, linkname=first,
                                       **common), None))
                continue
            if st.st_nlink > 1:
                links[key] = path
            pairs.append((TarEntry(type=EntryType.FILE, mode=perms, size=st.st_size, **common),
                          entry.path))
    return pairs
