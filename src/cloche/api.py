"""The library's face: ``cloche.build(...)`` and friends, with plain strings in.

    import cloche
    result = cloche.build(".", tags=["app:1.0"], build_args={"VERSION": "1.0"})
    print(result.digest, result.image.config.entrypoint)

Each function here turns strings into the engine's or the store's typed options and calls one
entry point below; the CLI calls the same functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from cloche.engine import events as ev
from cloche.engine.options import BuildOptions, OutputSpec, SecretSpec, parse_output, parse_secret
from cloche.store import Store

if TYPE_CHECKING:  # the engine loads when a build runs: `cloche pull` never imports it
    from cloche.engine.pipeline import BuildResult, CheckReport, DiskUsage, Prefetch, PruneReport
    from cloche.events import Listener
    from cloche.explainer import Report as ExplainReport
    from cloche.oci.image import Image
    from cloche.oci.platform import Platform
    from cloche.oci.reference import Reference
    from cloche.ops.describe import ImageSummary
    from cloche.ops.transfer import LoadedImage
    from cloche.registry.push import PushResult


def build(options: BuildOptions | str = ".", *, listener: ev.Listener | None = None,
          tags: Sequence[str] = (), build_args: Mapping[str, str] | None = None,
          target: str | None = None, dockerfile: str | None = None,
          outputs: Sequence[str | OutputSpec] = (), secrets: Sequence[str | SecretSpec] = (),
          prefetch: Prefetch | None = None, allow: Sequence[str] = (),
          **more: Any) -> BuildResult:
    """Build an image as ``docker build`` would and store it under ``tags``.

    ``options`` is a BuildOptions, or the context directory with the keyword arguments
    spelled like the CLI's flags (``no_cache=True``, ``platform="linux/arm64"``, ``root=``
    for the store...). ``listener`` receives typed progress events from worker threads.
    ``allow`` grants RUN steps entitlements, as ``--allow`` does: ``"network.host"``,
    ``"security.insecure"`` (off by default: a Dockerfile cannot take them).
    Two builds may run at once in threads of one process: each has its own cancel scope.
    """
    if not isinstance(options, BuildOptions):
        options = BuildOptions(
            context=str(options), tags=tuple(tags), build_args=dict(build_args or {}),
            target=target, dockerfile=dockerfile,
            outputs=tuple(o if isinstance(o, OutputSpec) else parse_output(o) for o in outputs),
            secrets=tuple(s if isinstance(s, SecretSpec) else parse_secret(s) for s in secrets),
            allow=(allow,) if isinstance(allow, str) else tuple(allow), **more)
    from cloche import engine

    if prefetch is None:
        prefetch = engine.prefetch_context(options.context)
    run_build = engine.build

    return run_build(options, store=Store.open(options.root), listener=listener or ev.ignore,
                     prefetch=prefetch)


def check(options: BuildOptions | str = ".", *, build_args: Mapping[str, str] | None = None,
          target: str | None = None, dockerfile: str | None = None,
          **more: Any) -> CheckReport:
    """Run BuildKit's build checks only, as ``docker build --check`` does: nothing is pulled
    and no step runs. Returns the warnings (``BuildWarning`` events with ``rule``, ``url``
    and lines); without a ``target`` every stage is checked. A Dockerfile the build would
    reject raises its ``DockerfileError``; an invalid ``# check=`` a ``ConfigError``."""
    if not isinstance(options, BuildOptions):
        options = BuildOptions(context=str(options), build_args=dict(build_args or {}),
                               target=target, dockerfile=dockerfile, **more)
    from cloche.engine.pipeline import check as run_check

    return run_check(options, store=Store.open(options.root))


def subrequest(options: BuildOptions | str, what: str) -> dict[str, Any]:
    """``--call targets`` (every stage) or ``--call outline`` (the build args, secrets and
    SSH sockets the target takes), as BuildKit's JSON; the Dockerfile alone is read."""
    if not isinstance(options, BuildOptions):
        options = BuildOptions(context=str(options))
    from cloche.engine.pipeline import subrequest as run_subrequest

    return run_subrequest(options, what)


def _root(root: str | Path | None) -> Path | None:
    return Path(root) if root is not None else None


def disk_usage(*, root: str | Path | None = None, verbose: bool = False) -> DiskUsage:
    """What images and the build cache take in the store (``cloche du``), with the rows of
    ``docker system df`` (image sizes as ``images`` shows them); ``verbose``: every image
    and build cache entry too (``docker system df -v``)."""
    from cloche.engine.pipeline import disk_usage as usage
    from cloche.ops.sizes import content_size

    store = _store(root, create=False)
    return usage(store, verbose=verbose, layer_size=lambda layer: content_size(store, layer))


def prune(*, root: str | Path | None = None, everything: bool = False,
          until: float | None = None, keep_storage: int | None = None) -> PruneReport:
    """Remove build cache as ``docker builder prune`` does: records no stored image uses
    (all with ``everything``), only those unused for ``until`` seconds, or the least recently
    used until ``keep_storage`` bytes remain."""
    from cloche.engine.pipeline import prune as run_prune

    return run_prune(_store(root, create=False), everything=everything,
                     until=until, keep_storage=keep_storage)


# --- images between the store, registries and files ----------------------------------------
# Each opens the store at ``root`` (None: $CLOCHE_ROOT or the default). The functions that only
# read refuse a given ``root`` that holds no store rather than making an empty one there.


def _store(root: str | Path | None, *, create: bool = True) -> Store:
    from cloche.store.root import not_a_store

    why = not_a_store(Path(root)) if not create and root is not None else None
    if why is not None:
        from cloche.errors import StoreError

        raise StoreError(f"the store {str(root)!r} {why}",
                         hint="check the path; build, pull, load and import create a store")
    return Store.open(_root(root))


def _platform(platform: str | Platform | None) -> Platform | None:
    from cloche.oci.platform import Platform

    return Platform.parse(platform) if isinstance(platform, str) else platform


def pull(reference: str | Reference, *, platform: str | Platform | None = None,
         root: str | Path | None = None, listener: Listener | None = None) -> Image:
    """Pull an image as ``docker pull`` does (mirrors first) and name it in the store.

    ``listener`` gets ``cloche.events`` LayerExists, LayerPulling and LayerPulled events."""
    from cloche.events import ignore
    from cloche.registry.pull import pull_image

    return pull_image(reference, _store(root), _platform(platform), listener=listener or ignore)


def push(reference: str, destination: str | Reference | None = None, *,
         root: str | Path | None = None, listener: Listener | None = None) -> PushResult:
    """Push the stored image ``reference`` (name, digest or ID) to its registry, or to
    ``destination``; blobs already in the registry are skipped or mounted, not sent.

    ``listener`` gets ``cloche.events`` LayerPushed and ManifestPushed events."""
    from cloche.events import ignore
    from cloche.registry.push import push_stored

    return push_stored(_store(root, create=False), reference, destination,
                       listener=listener or ignore)


def save(references: str | Sequence[str], dest: str | Path | BinaryIO, *, format: str = "oci",
         platform: str | Platform | None = None, root: str | Path | None = None) -> list[Image]:
    """Write stored images to one archive (``format`` oci, or docker for ``docker load``)."""
    from cloche.ops.transfer import save as save_images

    refs = [references] if isinstance(references, str) else list(references)
    return save_images(_store(root, create=False), refs, dest, format=format,
                       platform=_platform(platform))


def load(source: str | Path | BinaryIO, *, platform: str | Platform | None = None,
         root: str | Path | None = None) -> list[LoadedImage]:
    """Store every image of an OCI archive or docker-archive (plain or compressed)."""
    from cloche.ops.transfer import load as load_images

    return load_images(_store(root), source, platform=_platform(platform))


def inspect(reference: str, *, root: str | Path | None = None) -> dict[str, Any]:
    """What ``docker image inspect`` shows of a stored image (plus its manifest and blobs)."""
    from cloche.ops.describe import inspect as describe

    return describe(_store(root, create=False), reference)


def images(*, root: str | Path | None = None) -> list[ImageSummary]:
    """The rows of ``docker images``: every stored image, named ones first."""
    from cloche.ops.describe import summaries

    return summaries(_store(root, create=False))


def import_image(source: str | Path | BinaryIO, name: str | None = None, *,
                 changes: Sequence[str] = (), message: str | None = None,
                 platform: str | Platform | None = None,
                 root: str | Path | None = None) -> Image:
    """A root filesystem (directory, tar, compressed tar, or a binary stream of a tar) as a
    one-layer image, as ``docker import`` makes one; ``changes`` are Dockerfile lines (CMD,
    ENV, EXPOSE, WORKDIR...) with their build meaning."""
    from cloche.ops.importer import ImportSourceError, import_rootfs
    from cloche.store import canonical_name

    names = [canonical_name(name)] if name else []  # a bad name fails before any work
    changes = list(changes)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ImportSourceError(f"{source}: no such file or directory")
        _, image = import_rootfs(_store(root), path, names=names, changes=changes,
                                 platform=_platform(platform), message=message)
    else:
        _, image = import_rootfs(_store(root), source, names=names, changes=changes,
                                 platform=_platform(platform), message=message,
                                 source_label="-")
    return image


def explain(target: str | BuildOptions = ".", *, root: str | Path | None = None,
            platform: str | Platform | None = None, listener: ev.Listener | None = None,
            image: bool | None = None, **build_options: Any) -> ExplainReport:
    """What a build ships, what it leaked, whether it will run (``cloche explain``).

    ``target`` is a build (a BuildOptions, or a context directory with ``build_options``
    spelled as for ``build``: the build runs, or is reused from the cache) or an image: a
    stored name or digest, ``docker://REF`` (pulled into the store, as a plain reference
    not stored is), ``oci-archive:PATH`` or ``docker-archive:PATH`` (read in place).
    ``image=True`` takes a directory name as an image name. Returns a
    ``cloche.explainer.Report``: ``to_json()`` is the documented schema (docs/explain.md).
    """
    from cloche.explainer import explain_build, explain_image

    if isinstance(target, BuildOptions) or (image is not True and Path(target).is_dir()):
        events: list[ev.Event] = []
        forward = listener or ev.ignore

        def record(event: ev.Event) -> None:
            events.append(event)  # list.append is atomic: the engine calls from its threads
            forward(event)

        if isinstance(target, BuildOptions):
            options = target
        else:
            plat = str(platform) if platform is not None else None
            options = BuildOptions(context=str(target), root=_root(root), platform=plat,
                                   **build_options)
        result = build(options, listener=record)
        return explain_build(result, events, store=Store.open(options.root))
    store = _store(root)
    found, reference = _explained_image(target, store, platform, listener)
    return explain_image(found, store=store, reference=reference)


def explain_result(result: BuildResult, events: Sequence[ev.Event], *,
                   root: str | Path | None = None) -> ExplainReport:
    """Explain a build already made (``cloche build --explain``): ``events`` are the events
    its listener received."""
    from cloche.explainer import explain_build

    return explain_build(result, events, store=_store(root))


def _explained_image(target: str, store: Store, platform: str | Platform | None,
                     listener: ev.Listener | None) -> tuple[Image, str]:
    """The image ``cloche explain IMAGE`` names, and the name to show for it."""
    from cloche.errors import ImageNotFoundError

    wanted = _platform(platform)
    if target.startswith("oci-archive:"):
        from cloche.oci.archive import read_oci_archive

        path, _, name = target[len("oci-archive:"):].partition("::")
        return read_oci_archive(path, name or None, platform=wanted), target
    if target.startswith("docker-archive:"):
        from cloche.oci.docker_archive import read_docker_archive

        path, _, tag = target[len("docker-archive:"):].partition("::")
        return read_docker_archive(path, tag or None), target
    if target.startswith("docker://"):
        reference = target[len("docker://"):]
        return pull(reference, platform=wanted, root=store.root, listener=listener), reference
    try:
        return store.image(target, wanted), target
    except ImageNotFoundError:
        return pull(target, platform=wanted, root=store.root, listener=listener), target


def __getattr__(name: str) -> Any:
    if name == "BuildResult":  # loaded with the engine, on first use
        from cloche.engine.pipeline import BuildResult

        return BuildResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BuildResult", "build", "check", "disk_usage", "explain", "explain_result", "images",
           "import_image", "inspect", "load", "prune", "pull", "push", "save"]
