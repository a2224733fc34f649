"""Named contexts: ``--build-context NAME=VALUE``, as buildx hands them to BuildKit.

A name the Dockerfile uses in ``FROM``, ``COPY --from`` or ``RUN --mount from=`` is looked up
here (plan/steps.py: after the stages, before pulling an image of that name), normalised as
BuildKit's frontend does (``docker.io/library/alpine:latest`` is ``alpine``); a stage whose
own name is a named context is replaced by it whole. A context is:

- a local directory: read in place like the main context (its own ``.dockerignore``, owners
  reset to 0:0, paths confined to it, never followed out); used as a base image (``FROM``) it
  becomes one layer holding the directory, on BuildKit's empty image config;
- ``docker-image://REF``: an image, resolved like a FROM (the store, else a pull);
- a Git URL (``https://host/repo.git#ref:subdir``, ``git@host:repo``...): the checkout, its
  ``.git`` kept (BuildKit keeps it for a named context), fetched when a step first needs it
  with the Git context's safeguards (engine/gitsource.py); no ``.dockerignore`` applies;
- another ``http(s)://`` URL: one file, the download (named as ADD names one: the
  Content-Disposition name, else the URL's last path segment), mode 0600 as BuildKit's HTTP
  source makes it, under the layer size bound;
- ``oci-layout://PATH[:TAG][@DIGEST]``: an image of a local OCI layout, chosen as buildx
  chooses it (the digest; else the entry whose ``io.containerd.image.name`` or
  ``org.opencontainers.image.ref.name`` is TAG, default ``latest``; else the only entry).
  Every file of the layout is read confined to its folder, regular files only (a FIFO or a
  device is never opened), and each blob is checked against its digest as it is copied into
  the store.

Cache identities: a directory's content hash (paths, modes, owners, contents; never mtimes)
of what a step reads (a download's too), a Git context's commit, an image's manifest digest.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from cloche.engine.cache import StatCache
from cloche.engine.context import ContextError
from cloche.engine.dockerignore import PatternMatcher, load_matcher
from cloche.engine.images import ImageResolver
from cloche.engine.options import ContextSource, SecretSpec, context_name, parse_context_source
from cloche.engine.sources import SourceTree, content_hash
from cloche.engine.workspace import Workspace
from cloche.errors import ClocheError, ConfigError, InvalidReferenceError
from cloche.fs.paths import resolve_in_root
from cloche.fs.regular import NotRegularFileError, open_regular, read_regular_in_root
from cloche.oci import mediatypes as mt
from cloche.oci.config import History, ImageConfig
from cloche.oci.descriptor import ANNOTATION_REF_NAME, Descriptor
from cloche.oci.digest import Digest
from cloche.oci.image import Image, Layer
from cloche.oci.layout import resolve_image
from cloche.oci.manifest import Index
from cloche.oci.platform import Platform
from cloche.sandbox.spec import DEFAULT_PATH
from cloche.store import Store

__all__ = ["NamedContexts", "ContextResolver"]

CONTAINERD_NAME = "io.containerd.image.name"
LAYOUT_INDEX_LIMIT = 4 << 20  # bytes of a layout's index.json read at most


@dataclass(frozen=True)
class _Dir:
    """A directory context, checked: its real root and its ignore rules; a Git checkout's
    identity (its commit and subdir) when it is one."""

    root: Path
    ignore: PatternMatcher
    commit: str | None = None

_TREES = ("dir", "git", "http")  # the kinds that are files, not an image


class NamedContexts:
    """The build's named contexts, checked before the build starts (as buildx checks them):
    a directory must exist, an oci-layout reference must resolve. ``lookup`` is what the plan
    asks (``plan.steps.ContextNames``)."""

    def __init__(self, given: Mapping[str, str]) -> None:
        self.sources = {name: parse_context_source(name, value) for name, value in given.items()}
        self.dirs: dict[str, _Dir] = {}
        self.layouts: dict[str, tuple[Path, Descriptor]] = {}
        for name, source in self.sources.items():
            if source.kind == "dir":
                self.dirs[name] = _open_dir(source)
            elif source.kind == "oci-layout":
                self.layouts[name] = _layout_entry(source)

    def __bool__(self) -> bool:
        return bool(self.sources)

    def lookup(self, name: str) -> str | None:
        try:
            key = context_name(name)
        except InvalidReferenceError:
            return None
        return key if key in self.sources else None


def _open_dir(source: ContextSource) -> _Dir:
    assert source.path is not None
    path = Path(source.path)
    try:
        st = os.stat(path)
    except OSError as err:
        raise ContextError(f"{source.flag}: failed to get build context {source.name}: "
                           f"{path}: {err.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ContextError(f"{source.flag}: {path} is not a directory",
                           hint="a named context is a directory, docker-image://REF or "
                                "oci-layout://PATH[:TAG][@DIGEST]")
    root = path.resolve()
    try:
        ignore = load_matcher(root)  # <dir>/.dockerignore, as BuildKit reads for local:NAME
    except (NotRegularFileError, OSError) as err:
        raise ContextError(f"{source.flag}: {root}/.dockerignore: {err}") from None
    return _Dir(root, ignore)


class _LayoutBlobs:
    """The blobs of an OCI layout, read confined to its folder: ``blobs/ALG/HEX`` resolved as
    if the folder were ``/`` (a link cannot lead out), regular files only, opened with
    O_NOFOLLOW|O_NONBLOCK (a FIFO planted as a blob cannot hang the build)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _host(self, digest: Digest) -> Path:
        return resolve_in_root(self.root, f"blobs/{digest.algorithm}/{digest.hex}")

    def open(self, digest: Digest) -> BinaryIO:
        from cloche.oci.errors import BlobNotFoundError

        try:
            fd = open_regular(self._host(digest), what=f"blob {digest} of {self.root}")
        except (FileNotFoundError, NotADirectoryError):
            raise BlobNotFoundError(f"blob {digest} not found", digest=digest,
                                    source=str(self.root)) from None
        return os.fdopen(fd, "rb")

    def size(self, digest: Digest) -> int:
        with self.open(digest) as f:
            return os.fstat(f.fileno()).st_size


def _layout_entry(source: ContextSource) -> tuple[Path, Descriptor]:
    """The layout's folder and the index entry (or digest) the reference names, as buildx
    resolves it before the build."""
    assert source.path is not None
    root = Path(source.path)
    if not root.is_dir():
        raise ContextError(f"{source.flag}: {root} is not a directory (an OCI layout)")
    root = root.resolve()
    what = f"{source.flag}: {root}/index.json"
    try:
        data = read_regular_in_root(root, "index.json", what=what)
    except FileNotFoundError:
        raise ContextError(f"{what}: no such file", hint="not an OCI image layout") from None
    except NotRegularFileError as err:
        raise ContextError(err.message) from None
    if len(data) > LAYOUT_INDEX_LIMIT:
        raise ContextError(f"{what}: larger than {LAYOUT_INDEX_LIMIT} bytes")
    try:
        index = Index.from_json(data, media_type=mt.OCI_INDEX, source=str(root / "index.json"))
    except ClocheError as err:
        raise ContextError(f"{source.flag}: {err.message}") from None
    entries = index.manifests
    if source.digest is not None:
        digest = Digest.parse(source.digest)
        for desc in entries:
            if desc.digest == digest:
                return root, desc
        return root, _descriptor_of_blob(root, digest, source)
    for key in (CONTAINERD_NAME, ANNOTATION_REF_NAME):
        for desc in entries:
            if desc.annotations.get(key) == source.tag:
                return root, desc
    if len(entries) == 1:
        return root, entries[0]
    names = sorted({d.annotations.get(ANNOTATION_REF_NAME, "") for d in entries} - {""})
    raise ContextError(f"{source.flag}: oci-layout reference could not be resolved: no image "
                       f"named {source.tag!r} among {len(entries)}",
                       hint=f"name one: {', '.join(names)}" if names
                       else "add @sha256:DIGEST to choose one")


def _descriptor_of_blob(root: Path, digest: Digest, source: ContextSource) -> Descriptor:
    """A descriptor for a manifest or index that index.json does not list (``@DIGEST``)."""
    blobs = _LayoutBlobs(root)
    try:
        with blobs.open(digest) as f:
            data = f.read(LAYOUT_INDEX_LIMIT + 1)
    except ClocheError as err:
        raise ContextError(f"{source.flag}: {err.message}") from None
    if len(data) > LAYOUT_INDEX_LIMIT or Digest.from_bytes(data) != digest:
        raise ContextError(f"{source.flag}: blob {digest} is not a manifest or does not match "
                           "its digest")
    try:
        doc = json.loads(data)
    except ValueError:
        raise ContextError(f"{source.flag}: blob {digest} is not a manifest") from None
    media_type = doc.get("mediaType") if isinstance(doc, dict) else None
    if not isinstance(media_type, str):
        media_type = mt.OCI_INDEX if isinstance(doc, dict) and "manifests" in doc \
            else mt.OCI_MANIFEST
    return Descriptor(media_type, digest, len(data))


class ContextResolver:
    """Opens the named contexts for the steps of one build: images (pulled, read from a
    layout, or made of a directory) once per platform, source trees, cache identities."""

    def __init__(self, named: NamedContexts, store: Store, images: ImageResolver,
                 workspace: Workspace, platform: Platform,
                 secrets: Sequence[SecretSpec] = ()) -> None:
        self.named = named
        self.secrets = secrets  # a Git context's HTTP authentication (gitsource.auth_header)
        self.store = store
        self.images = images
        self.workspace = workspace
        self.platform = platform
        self._lock = threading.Lock()
        self._futures: dict[tuple[str, str], Future[Image]] = {}
        self._stats: dict[str, StatCache] = {}
        self._fetched: dict[str, Future[_Dir]] = {}

    def source(self, name: str) -> ContextSource:
        return self.named.sources[name]

    def prefetch(self, name: str, platform: str | None = None) -> Future[Image] | None:
        """Start pulling a ``docker-image://`` context (None for the other kinds)."""
        source = self.source(name)
        if source.kind == "image" and source.reference not in (None, "scratch"):
            assert source.reference is not None
            return self.images.prefetch(source.reference, platform)
        return None

    def image(self, name: str, platform: str | None = None) -> Image:
        """The context as an image (a base for FROM, or files for --from), made once."""
        want = Platform.parse(platform) if platform else self.platform
        return _once(self._lock, self._futures, (name, str(want)),
                     lambda: self._make(name, want, platform))

    def _make(self, name: str, want: Platform, platform: str | None) -> Image:
        source = self.source(name)
        if source.kind == "image":
            assert source.reference is not None
            if source.reference == "scratch":
                return Image.from_config(_empty_config(want))
            try:
                return self.images.get(source.reference, platform)
            except ClocheError as err:
                raise ConfigError(f"{source.flag}: {err.message}", hint=err.hint) from err
        if source.kind == "oci-layout":
            return self._layout_image(name, source, want)
        return self._dir_image(name, want)

    def _dir(self, name: str) -> _Dir:
        """A directory context as checked, or a remote one fetched (once) into the build's
        folder."""
        found = self.named.dirs.get(name)
        if found is not None:
            return found
        return _once(self._lock, self._fetched, name, lambda: self._fetch(self.source(name)))

    def _fetch(self, source: ContextSource) -> _Dir:
        assert source.reference is not None
        scratch = self.workspace.scratch_path("named-context-")
        scratch.mkdir(mode=0o700)
        try:
            if source.kind == "git":
                from cloche.engine.gitsource import fetch
                from cloche.engine.giturl import parse_git_ref

                ref = parse_git_ref(source.reference, context=True)
                assert ref is not None
                checkout = fetch(ref, scratch, keep_git_dir=True, secrets=self.secrets)
                return _Dir(checkout.root.resolve(), PatternMatcher(),
                            commit=f"{checkout.commit}:{ref.subdir}")
            from cloche.engine.remote import download

            fetched = scratch / "download"
            fetched.mkdir(mode=0o700)
            got = download(source.reference, fetched, label=source.flag)
            root = scratch / "context"
            root.mkdir(mode=0o755)
            target = root / got.filename
            os.replace(got.path, target)
            os.chmod(target, 0o600)  # BuildKit's HTTP source writes the file 0600
            if got.mtime_ns is not None:  # its Last-Modified, as ADD keeps it
                os.utime(target, ns=(got.mtime_ns, got.mtime_ns), follow_symlinks=False)
            return _Dir(root, PatternMatcher())
        except ClocheError as err:
            raise ConfigError(f"{source.flag}: {err.message}", hint=err.hint) from err

    def _layout_image(self, name: str, source: ContextSource, want: Platform) -> Image:
        root, desc = self.named.layouts[name]
        blobs = _LayoutBlobs(root)
        try:
            image = resolve_image(Index((desc,)), blobs, platform=want, source=str(root))
            stored = self.store.put_image(image)  # every blob checked as it is copied in
            return self.store.image(str(stored.digest), want)
        except ClocheError as err:
            raise ConfigError(f"{source.flag}: {err.message}", hint=err.hint) from err

    def _dir_image(self, name: str, want: Platform) -> Image:
        """The directory as one layer on BuildKit's empty image (FROM a local context):
        ignored files left out, owners 0:0, as BuildKit receives it."""
        from cloche.engine.copy import CopyRequest, copy_into
        from cloche.fs.rmtree import rmtree
        from cloche.layers.tree import write_tree

        tree = self._tree(name)
        scratch = self.workspace.scratch_path("named-context-")
        scratch.mkdir(mode=0o700)
        try:
            copy_into(CopyRequest((".",), "/"), tree, scratch)
            with self.workspace.cpu.slot(), \
                    self.store.blobs.writer(hashed_by_caller=True) as sink:
                blob = write_tree(scratch, sink, self.workspace.compression)
                sink.name_as(blob.digest, blob.size)
        finally:
            rmtree(scratch, ignore_errors=True)
        layer = Layer(blob.digest, blob.diff_id, blob.size, blob.media_type, self.store.blobs)
        config = _empty_config(want).replace(
            diff_ids=(blob.diff_id,),
            history=(History(created_by=f"local source for {name}",
                             comment="buildkit.exporter.image.v0"),))
        return Image.from_config(config, (layer,))

    def _tree(self, name: str) -> SourceTree:
        found = self._dir(name)
        return SourceTree(found.root, found.ignore, reset_owner=True,
                          label=f"build context {name!r}")

    def base_key(self, name: str, platform: str | None = None) -> str:
        """What a stage built on the context is keyed by: a directory's content hash (its
        mtimes left out, as for COPY), else the image's digest."""
        if self.source(name).kind in _TREES:
            return "context:" + self.identity(name, (".",), ())
        return str(self.image(name, platform).digest)

    @contextmanager
    def open(self, name: str) -> Iterator[SourceTree]:
        """The files of the context for COPY --from and RUN --mount from=."""
        if self.source(name).kind in _TREES:
            yield self._tree(name)
            return
        image = self.image(name)
        yield SourceTree.stage(self.workspace.image_rootfs(image, name), name)

    def identity(self, name: str, paths: tuple[str, ...], excludes: tuple[str, ...]) -> str:
        if self.source(name).kind not in _TREES:
            return "image:" + str(self.image(name).digest) + repr(paths)
        found = self._dir(name)
        if found.commit is not None:  # a checkout: its commit says what its files are
            return f"git:{found.commit}:{paths!r}:{excludes!r}"
        tree = self._tree(name)
        with self._lock:
            cache = self._stats.get(name)
            if cache is None:
                cache = self._stats[name] = StatCache(self.store, tree.root)
        return "named:" + content_hash(tree, paths, excludes=excludes, cache=cache)

    def save(self) -> None:
        for cache in self._stats.values():
            cache.save()


_K = TypeVar("_K")
_V = TypeVar("_V")


def _once(lock: threading.Lock, made: dict[_K, Future[_V]], key: _K,
          make: Callable[[], _V]) -> _V:
    """``make()`` run once for ``key``: the first caller runs it, every other caller (any
    thread) waits for it and gets its result, or its error raised."""
    with lock:
        future = made.get(key)
        owner = future is None
        if future is None:
            future = made[key] = Future()
    if owner:
        try:
            future.set_result(make())
        except BaseException as err:  # noqa: BLE001 - handed to every waiter
            future.set_exception(err)
    return future.result()


def _empty_config(platform: Platform) -> ImageConfig:
    """BuildKit's empty image: working directory / and the default PATH."""
    return ImageConfig(architecture=platform.architecture, os=platform.os,
                       variant=platform.variant, working_dir="/",
                       env=(f"PATH={DEFAULT_PATH}",))
