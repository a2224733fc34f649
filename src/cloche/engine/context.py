"""The build context: a directory, a tar on stdin or a URL, with its .dockerignore rules.

``docker build DIR`` sends DIR minus what .dockerignore (or ``<Dockerfile>.dockerignore``)
excludes; ``docker build - < ctx.tar[.gz]`` sends a tar, and ``docker build - < Dockerfile``
sends a Dockerfile with an empty context. cloche reads the directory in place (nothing is
copied up front: only the paths a COPY/ADD names are read), and extracts a stdin tar into a
private temporary directory with the same confinement as ADD (no entry escapes it).

The ignore rules belong to the main context only: ``SourceTree.stage`` gives the view of
another stage, without them.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from cloche.compression import Compression, detect_compression
from cloche.engine.dockerignore import PatternMatcher, load_matcher
from cloche.engine.extract import Prefixed, extract_tar
from cloche.engine.giturl import is_remote_context
from cloche.engine.sources import SourceTree
from cloche.errors import ConfigError
from cloche.fs.rmtree import rmtree
from cloche.sandbox.scratch import make_scratch

if TYPE_CHECKING:
    from cloche.engine.options import SecretSpec

__all__ = ["BuildContext", "ContextError", "context_from_directory", "context_from_stream",
           "open_context"]

_TAR_MAGIC_OFFSET = 257


class ContextError(ConfigError):
    """A build context that cannot be used (missing, not a directory, unreadable tar)."""


@dataclass(frozen=True)
class BuildContext:
    """A build context ready to be read by COPY/ADD.

    ``root`` is the context directory; ``ignore`` its rules; ``dockerfile`` the Dockerfile
    found in a stdin stream (None for a directory context: the engine locates it from -f);
    ``temporary`` the private directory (holding ``root``) that ``cleanup`` removes.
    """

    root: Path
    ignore: PatternMatcher
    dockerfile: Path | None = None
    temporary: Path | None = None
    remote: str | None = None  # the URL of a Git or HTTP context (credentials hidden)

    @property
    def tree(self) -> SourceTree:
        """The context as a source tree: ignore rules applied, owners reset to 0:0."""
        return SourceTree(self.root, self.ignore, reset_owner=True, label="build context")

    def cleanup(self) -> None:
        if self.temporary is not None:
            rmtree(self.temporary, ignore_errors=True)


def context_from_directory(path: Path, dockerfile: Path | None = None) -> BuildContext:
    """A context read in place from ``path``; ``dockerfile`` selects its specific ignore file."""
    if not path.exists():
        raise ContextError(f"build context {path} does not exist")
    if not path.is_dir():
        raise ContextError(f"build context {path} is not a directory",
                           hint="pass a directory, or - to read a tar from stdin")
    root = path.resolve()
    return BuildContext(root, load_matcher(root, dockerfile))


def _looks_like_tar(head: bytes) -> bool:
    return head[_TAR_MAGIC_OFFSET:_TAR_MAGIC_OFFSET + 5] == b"ustar"


def context_from_stream(stream: BinaryIO, *, dockerfile_name: str = "Dockerfile",
                        workdir: Path | None = None) -> BuildContext:
    """A context from stdin: a tar (plain or compressed), or else a lone Dockerfile.

    The tar is extracted into a new temporary directory; owners in it are not kept (the
    context is owned by 0:0 for COPY anyway). The caller removes it with ``cleanup()``.
    """
    head = stream.read(512)
    rest: BinaryIO = io.BufferedReader(Prefixed(head, stream))
    base = make_scratch("context", workdir)  # in $TMPDIR, named so a sweep finds it stale
    root = base / "context"
    root.mkdir(mode=0o755)
    try:
        if detect_compression(head) is not Compression.NONE or _looks_like_tar(head):
            extract_tar(rest, root, label="context tar from stdin", keep_owner=False)
            candidate = root / dockerfile_name
            # Not followed here: the engine reads it inside the context (it may be a link).
            found = candidate if os.path.lexists(candidate) else None
        else:
            found = base / "Dockerfile"
            with open(found, "wb") as out:
                shutil.copyfileobj(rest, out)
        return BuildContext(root, load_matcher(root, found), found, temporary=base)
    except BaseException:
        rmtree(base, ignore_errors=True)
        raise


def context_from_url(url: str, *, dockerfile: Path | None = None,
                     workdir: Path | None = None,
                     secrets: Sequence[SecretSpec] = ()) -> BuildContext:
    """A context fetched from ``url``: a Git repository, else an HTTP(S) download.

    As BuildKit's dockerui: a Git context is the checkout (of its subdir), without ``.git``
    unless ``?keep-git-dir=true``; a download that is a tar (plain or compressed) is
    extracted into the context; any other download is the Dockerfile, and the context holds
    it alone, named ``context``. No ``.dockerignore`` applies to a remote context. A relative
    ``dockerfile`` is read inside the context (an absolute one is the caller's own file).
    """
    from cloche.engine.giturl import parse_git_ref, redact

    base = make_scratch("context", workdir)
    try:
        ref = parse_git_ref(url, context=True)
        if ref is not None:
            from cloche.engine.gitsource import fetch

            root = fetch(ref, base, keep_git_dir=bool(ref.keep_git_dir),
                         secrets=secrets).root.resolve()
            found = _dockerfile_in(root, dockerfile)
        else:
            root, found = _download_context(url, base)
            if found is None:
                found = _dockerfile_in(root, dockerfile)
        return BuildContext(root, PatternMatcher(), found, temporary=base, remote=redact(url))
    except BaseException:
        rmtree(base, ignore_errors=True)
        raise


def _dockerfile_in(root: Path, dockerfile: Path | None) -> Path | None:
    if dockerfile is not None and dockerfile.is_absolute():
        return None  # the engine reads -f itself
    return root / (dockerfile if dockerfile is not None else "Dockerfile")


def _download_context(url: str, base: Path) -> tuple[Path, Path | None]:
    """(context root, Dockerfile if the download is one) for an HTTP(S) context."""
    from cloche.engine.extract import is_tar_archive
    from cloche.engine.giturl import redact
    from cloche.engine.remote import download

    fetched = base / "download"
    fetched.mkdir(mode=0o700)
    got = download(url, fetched, filename="context", label="build context")
    root = base / "context"
    root.mkdir(mode=0o755)
    if is_tar_archive(got.path):
        with open(got.path, "rb") as raw:
            extract_tar(raw, root, label=f"context tar from {redact(url)}",
                        keep_owner=False)
        return root, None
    os.replace(got.path, root / "context")
    return root, root / "context"


@contextmanager
def open_context(spec: str | Path, *, dockerfile: Path | None = None,
                 stdin: BinaryIO | None = None,
                 secrets: Sequence[SecretSpec] = ()) -> Iterator[BuildContext]:
    """``CONTEXT`` as the command line gives it (a directory, a Git or HTTP(S) URL, or ``-``
    for stdin), cleaned up after. ``secrets``: for a Git URL's HTTP authentication."""
    if str(spec) == "-":
        if stdin is None:
            raise ContextError("context '-' needs a stream to read from")
        ctx = context_from_stream(stdin, dockerfile_name=dockerfile.name if dockerfile else "Dockerfile")
    elif isinstance(spec, str) and is_remote_context(spec):  # a URL is never made a Path
        ctx = context_from_url(spec, dockerfile=dockerfile, secrets=secrets)
    else:
        ctx = context_from_directory(Path(spec), dockerfile)
    try:
        yield ctx
    finally:
        ctx.cleanup()
