"""ADD: COPY plus two things, local archives extracted and URLs downloaded.

Local sources go through ``copy_into`` with ``unpack=True``: a file that is a tar (plain,
gzip, bzip2, xz or zstd, told by content) is extracted into the destination directory,
confined to it; owners come from the tar even with --chown (as the Docker engine's BuildKit
does; --chown then only owns the directories created for the destination). URL sources are downloaded into a
private temporary directory (``remote.download``: mode 0600, Last-Modified as mtime,
``--checksum`` verified) and then copied like a context file (owner 0:0 unless --chown,
--chmod applies); a downloaded archive is not extracted, as in BuildKit.
"""

from __future__ import annotations

import posixpath
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from cloche.engine.copy import CopyDestinationError, CopyRequest, CopyResult, copy_into, destination_path
from cloche.engine.fsutil import resolve_dest
from cloche.engine.remote import download, is_url
from cloche.engine.sources import SourceTree

if TYPE_CHECKING:
    import httpx

__all__ = ["add_into"]


def add_into(request: CopyRequest, tree: SourceTree, root: Path, *, checksum: str | None = None,
             client: httpx.Client | None = None, tmp_dir: Path | None = None,
             users_root: Path | None = None) -> CopyResult:
    """Carry out ``ADD`` of ``request`` from ``tree`` (local sources) into the rootfs ``root``."""
    dest, dest_is_dir = destination_path(request.dest, request.workdir)
    urls = [s for s in request.sources if is_url(s)]
    local = tuple(s for s in request.sources if not is_url(s))
    # several sources need a directory; local ones count after wildcard expansion (copy_into)
    if len(urls) > 1 and not dest_is_dir \
            and not resolve_dest(root, dest).is_dir():  # BuildKit: an existing directory will do
        raise CopyDestinationError(
            "When using ADD with more than one source file, the destination must be a "
            f"directory and end with a / (got {request.dest!r})")
    if checksum is not None and local:
        raise CopyDestinationError(f"ADD --checksum can only be used with HTTP(S) sources, "
                                   f"not {local[0]!r}")
    sources = entries = size = 0
    if local:
        done = copy_into(_with(request, local), tree, root, unpack=True, users_root=users_root,
                         other_sources=len(urls))
        sources, entries, size = done.sources, done.entries, done.bytes
    for url in urls:
        manual = None if dest_is_dir else posixpath.basename(dest)
        with tempfile.TemporaryDirectory(prefix="cloche-add-", dir=tmp_dir) as tmp:
            got = download(url, Path(tmp), checksum=checksum, filename=manual, client=client)
            fetched = SourceTree(Path(tmp).resolve(), reset_owner=True, label=f"download of {url}")
            done = copy_into(_with(request, (got.filename,)), fetched, root, users_root=users_root)
        sources, entries, size = sources + 1, entries + done.entries, size + done.bytes
    return CopyResult(sources, entries, size)


def _with(request: CopyRequest, sources: tuple[str, ...]) -> CopyRequest:
    return CopyRequest(sources, request.dest, request.workdir, request.chown, request.chmod,
                       request.parents, request.excludes, request.link, "ADD")

