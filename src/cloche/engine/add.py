"""ADD: COPY plus three things: local archives extracted, URLs downloaded, Git repositories
checked out.

Local sources go through ``copy_into`` with ``unpack=True``: a file that is a tar (plain,
gzip, bzip2, xz or zstd, told by content) is extracted into the destination directory,
confined to it; owners come from the tar, or all are the --chown owner (as current BuildKit
does; the Docker engine's v0.8 kept the tar's owners even then). URL sources are downloaded into a
private temporary directory (``remote.download``: mode 0600, Last-Modified as mtime,
``--checksum`` verified) and then copied like a context file (owner 0:0 unless --chown,
--chmod applies); a downloaded archive is not extracted, as in BuildKit. A Git source
(``https://host/repo.git#ref:subdir``, ``git@host:repo``, ``git://``; see ``giturl.py``) is
checked out (``gitsource.fetch``) and its tree copied into the destination like a context
directory, without ``.git`` unless ``--keep-git-dir=true``; ``--checksum`` is then the
commit's hash (or a prefix of it).
"""

from __future__ import annotations

import posixpath
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from cloche.engine.copy import CopyDestinationError, CopyRequest, CopyResult, copy_into, destination_path
from cloche.engine.fsutil import resolve_dest
from cloche.engine.gitsource import fetch, resolve
from cloche.engine.giturl import GitRef, GitRefError, check_checksum_syntax, is_git_source, parse_git_ref
from cloche.engine.remote import download, is_url
from cloche.engine.sources import SourceTree

if TYPE_CHECKING:
    import httpx

    from cloche.engine.options import SecretSpec

__all__ = ["add_into", "git_commit", "git_ref"]


def add_into(request: CopyRequest, tree: SourceTree, root: Path, *, checksum: str | None = None,
             client: httpx.Client | None = None, tmp_dir: Path | None = None,
             users_root: Path | None = None, keep_git_dir: bool = False,
             commits: Mapping[str, str] | None = None,
             secrets: Sequence[SecretSpec] = ()) -> CopyResult:
    """Carry out ``ADD`` of ``request`` from ``tree`` (local sources) into the rootfs ``root``.

    ``commits``: for a Git source, the commit its cache key was made from (``git_commit``);
    ``secrets``: the build's, for Git HTTP authentication (gitsource.auth_header)."""
    dest, dest_is_dir = destination_path(request.dest, request.workdir)
    gits = [s for s in request.sources if is_git_source(s)]
    urls = [s for s in request.sources if is_url(s) and s not in gits]
    local = tuple(s for s in request.sources if s not in gits and s not in urls)
    # several sources need a directory; local ones count after wildcard expansion (copy_into)
    if len(urls) + len(gits) > 1 and not dest_is_dir \
            and not resolve_dest(root, dest).is_dir():  # BuildKit: an existing directory will do
        raise CopyDestinationError(
            "When using ADD with more than one source file, the destination must be a "
            f"directory and end with a / (got {request.dest!r})")
    if checksum is not None and local:
        raise CopyDestinationError(f"ADD --checksum can only be used with HTTP(S) and Git "
                                   f"sources, not {local[0]!r}")
    sources = entries = size = 0
    if local:
        done = copy_into(_with(request, local), tree, root, unpack=True, users_root=users_root,
                         other_sources=len(urls) + len(gits))
        sources, entries, size = done.sources, done.entries, done.bytes
    for source in gits:
        ref = git_ref(source, checksum, keep_git_dir)
        with tempfile.TemporaryDirectory(prefix="cloche-add-git-", dir=tmp_dir) as tmp:
            checkout = fetch(ref, Path(tmp), keep_git_dir=bool(ref.keep_git_dir),
                             commit=(commits or {}).get(source), secrets=secrets)
            fetched = SourceTree(checkout.root.resolve(), reset_owner=True,
                                 label=f"git repository {ref.shown}")
            done = copy_into(_with(request, (".",)), fetched, root, users_root=users_root)
        sources, entries, size = sources + 1, entries + done.entries, size + done.bytes
    for url in urls:
        manual = None if dest_is_dir else posixpath.basename(dest)
        with tempfile.TemporaryDirectory(prefix="cloche-add-", dir=tmp_dir) as tmp:
            got = download(url, Path(tmp), checksum=checksum, filename=manual, client=client)
            fetched = SourceTree(Path(tmp).resolve(), reset_owner=True, label=f"download of {url}")
            done = copy_into(_with(request, (got.filename,)), fetched, root, users_root=users_root)
        sources, entries, size = sources + 1, entries + done.entries, size + done.bytes
    return CopyResult(sources, entries, size)


def git_ref(source: str, checksum: str | None, keep_git_dir: bool) -> GitRef:
    """An ADD source's Git reference with the instruction's flags merged in, as BuildKit
    merges them: ``--checksum`` and ``?checksum=`` must agree, and so must
    ``--keep-git-dir=true`` and ``?keep-git-dir=``."""
    ref = parse_git_ref(source)
    if ref is None:
        raise GitRefError(f"{source!r} is not a Git repository")
    if checksum and ref.checksum and checksum != ref.checksum:
        raise GitRefError(f"checksum mismatch {checksum!r} != {ref.checksum!r}")
    keep = ref.keep_git_dir
    if keep_git_dir and keep is False:
        raise GitRefError("inconsistent keep-git-dir configuration")
    if checksum and not ref.checksum:
        check_checksum_syntax(checksum)
        ref = replace(ref, checksum=checksum)
    return replace(ref, keep_git_dir=keep_git_dir or bool(keep))


def git_commit(source: str, checksum: str | None, keep_git_dir: bool,
               secrets: Sequence[SecretSpec] = ()) -> str:
    """The commit an ADD Git source names now: its cache key input."""
    return resolve(git_ref(source, checksum, keep_git_dir), secrets)


def _with(request: CopyRequest, sources: tuple[str, ...]) -> CopyRequest:
    return CopyRequest(sources, request.dest, request.workdir, request.chown, request.chmod,
                       request.parents, request.excludes, request.link, "ADD")

