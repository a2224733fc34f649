"""The engine's one entry point: options in, a built and exported image out.

``build(options, store=..., listener=...)`` opens the context, reads the Dockerfile, plans,
executes the plan and sends the image to its outputs. The library's face (``cloche.api``)
and the CLI turn their strings and flags into ``BuildOptions`` and call this; neither reaches
into the modules behind it.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloche.engine import events as ev
from cloche.engine.context import open_context
from cloche.engine.executor import Executor, StageReport
from cloche.engine.fastwalk import Prefetch, prefetch_context
from cloche.engine.options import BuildOptions
from cloche.engine.outputs import export
from cloche.engine.prune import DiskUsage, PruneReport, disk_usage, prune
from cloche.engine.scratch import sweep_stale
from cloche.errors import BuildError, ConfigError, SandboxError
from cloche.fs.regular import NotRegularFileError, read_regular_in_root
from cloche.oci.digest import Digest
from cloche.oci.image import Image
from cloche.store import Store

if TYPE_CHECKING:
    from cloche.dockerfile.stages import Dockerfile
    from cloche.engine.context import BuildContext
    from cloche.oci.platform import Platform
    from cloche.plan.checks import CheckConfig, CheckWarning
    from cloche.plan.graph import BuildPlan

__all__ = ["BuildResult", "CheckReport", "DiskUsage", "Prefetch", "PruneReport", "StageReport",
           "build", "check", "disk_usage", "prefetch_context", "prune", "subrequest"]


@dataclass(frozen=True)
class BuildResult:
    """The built image, its digests, the names it got, and what each stage did."""

    image: Image
    names: tuple[str, ...]
    pushed: tuple[str, ...]
    stages: tuple[StageReport, ...]
    seconds: float

    @property
    def digest(self) -> Digest:
        """The manifest digest (what a registry and ``docker push`` show)."""
        return self.image.digest

    @property
    def image_id(self) -> Digest:
        """The config digest (what ``docker images`` shows as IMAGE ID)."""
        return self.image.config_digest


def build(options: BuildOptions, *, store: Store, listener: ev.Listener = ev.ignore,
          prefetch: Prefetch | None = None) -> BuildResult:
    """Build the image ``options`` describe into ``store`` and send it to its outputs.

    ``listener`` receives typed progress events (``cloche.engine.events``), from worker
    threads. Raises a ``ClocheError`` that names the file, line and stage of what failed.
    """
    from cloche.dockerfile.stages import parse_dockerfile
    from cloche.engine.isolation import CHROOT_WARNING, nonroot_warning
    from cloche.engine.isolation import resolve as resolve_isolation
    from cloche.fs.owners import set_recording
    from cloche.oci.platform import Platform
    from cloche.plan.entitlements import check_plan
    from cloche.plan.graph import build_plan
    from cloche.sandbox.runner import require_root

    mode = resolve_isolation(options.isolation)
    unprivileged = os.geteuid() != 0  # chroot mode as a user: owners recorded, not set
    try:
        if mode != "chroot":
            require_root()
    except SandboxError as err:
        raise SandboxError("cloche build needs root for its sandbox (namespaces and overlayfs), "
                           "or a user namespace where it is root",
                           hint="call cloche.rootless.enter() first thing in the program "
                                "(before any thread starts), run the `cloche build` command "
                                "(it does that itself), run as root, or build with "
                                "--isolation=chroot; see docs/rootless.md and "
                                "docs/isolation.md") \
            from err
    set_recording(unprivileged)  # once per build: root builds set and read real owners
    if mode != options.isolation:  # auto: checked again for the mode it stands for
        options = dataclasses.replace(options, isolation=mode)
    if mode == "chroot":
        listener(ev.BuildWarning(CHROOT_WARNING))
        if unprivileged:
            listener(ev.BuildWarning(nonroot_warning(os.geteuid())))
    else:
        from cloche.sandbox.cgroups import require

        require(options.limits())  # --memory/--pids-limit on a host without cgroups: fail now
        _overlay_notice(store, listener)
    _rootless_notice(options, listener)
    sweep_stale(store)  # what killed builds left: scratch, cgroups, old plaintext secrets
    with store.lease(), _open_context(options) as context:
        text, name = _read_dockerfile(options, context)
        dockerfile = parse_dockerfile(text, file=name)
        platform = Platform.parse(options.platform) if options.platform else Platform.host()
        from cloche.engine.named import NamedContexts

        contexts = NamedContexts(options.build_contexts)  # checked as buildx checks them
        plan = build_plan(dockerfile, options.target, options.build_args,
                          platform=str(platform) if options.platform else None,
                          contexts=contexts if contexts else None)
        check_plan(plan, options.allow)  # --allow: refused before anything runs
        options = _with_epoch(options, plan, listener)
        if mode == "chroot":
            _check_chroot_plan(plan, name)
        config, warnings = _build_checks(dockerfile, options, store, context, platform)
        raised: list[ev.BuildWarning] = []

        def checked(event: ev.Event) -> None:  # the rules the engine raises obey # check=
            if isinstance(event, ev.BuildWarning) and event.rule:
                if not config.enabled(event.rule):
                    return
                raised.append(event)
            listener(event)

        for warning in warnings:
            checked(_warning_event(warning))
        unused = _unused_build_args(plan)
        if unused:
            listener(ev.BuildWarning(unused))
        remote = None
        if options.cache_to or (options.cache_from and not options.no_cache):
            from cloche.engine.remote_cache import RemoteCache

            remote = RemoteCache(store, options, checked)
        try:
            _lint_failure(raised, config)  # error=true: before any step runs
            if remote is not None:
                remote.load()  # the cache configs only: layers are fetched on a hit
            outcome = Executor(plan, options, store, context, checked, platform,
                               prefetch=prefetch, contexts=contexts, remote=remote).run()
            cache_meta: dict[str, object] = {}
            if remote is not None:
                shipped = plan.shipped
                outcome = dataclasses.replace(outcome, image=remote.inline(outcome.image,
                                                                           shipped))
                remote.export(shipped)
                if remote.exported:
                    cache_meta["cloche.cache.exported"] = remote.exported
                if remote.sources or options.cache_from:
                    cache_meta["cloche.cache.imported"] = remote.imported()
        except BuildError as err:
            if err.line and err.file in (None, name) and err.source is None:
                err.source = text  # for the excerpt of the failing instruction
            raise
        finally:
            if remote is not None:
                remote.close()
        exported = export(outcome.image, options, store, cache_meta, base=outcome.base,
                          listener=listener)
    image = exported.image or outcome.image  # rewrite-timestamp made another image
    listener(ev.BuildFinished(str(image.digest), outcome.seconds, image.size,
                              exported.names))
    return BuildResult(image, exported.names, exported.pushed, outcome.stages,
                       outcome.seconds)


def check(options: BuildOptions, *, store: Store) -> CheckReport:
    """Run the build checks only (``--check``, ``--call=check``): no step runs and nothing is
    pulled. A base image already in the store gives its Env to UndefinedVar; the checks that
    need a pulled image (InvalidBaseImagePlatform) are left out. A Dockerfile the build would
    reject raises its error, as BuildKit's check reports it."""
    from cloche.dockerfile.stages import parse_dockerfile
    from cloche.oci.platform import Platform

    with _open_context(options) as context:
        text, name = _read_dockerfile(options, context)
        dockerfile = parse_dockerfile(text, file=name)
        platform = Platform.parse(options.platform) if options.platform else Platform.host()
        config, warnings = _build_checks(dockerfile, options, store, context, platform,
                                         all_stages=not options.target)
    events = tuple(_warning_event(w) for w in warnings)
    return CheckReport(events, text, name)


def subrequest(options: BuildOptions, what: str) -> dict[str, Any]:
    """``--call targets`` or ``--call outline``: BuildKit's frontend subrequests, answered
    from the Dockerfile alone (the context is opened only to read it; nothing is pulled and
    no step runs). The reports are plan/outline.py's, as BuildKit's JSON."""
    from cloche.dockerfile.stages import parse_dockerfile
    from cloche.plan.graph import build_plan
    from cloche.plan.outline import outline, targets

    if what not in ("outline", "targets"):
        raise ConfigError(f"unknown subrequest {what!r}", hint="outline or targets")
    with _open_context(options) as context:
        text, name = _read_dockerfile(options, context)
    dockerfile = parse_dockerfile(text, file=name)
    if what == "targets":
        return targets(dockerfile)
    plan = build_plan(dockerfile, options.target, options.build_args, platform=options.platform)
    return outline(plan, options.build_args)


@dataclass(frozen=True)
class CheckReport:
    """What ``check`` found: one ``BuildWarning`` per raised rule, in line order, and the
    Dockerfile (its text and the name warnings use) for excerpts."""

    warnings: tuple[ev.BuildWarning, ...]
    dockerfile: str
    file: str


def _build_checks(dockerfile: Dockerfile, options: BuildOptions, store: Store,
                  context: BuildContext, platform: Platform, *, all_stages: bool = False,
                  ) -> tuple[CheckConfig, list[CheckWarning]]:
    """The check configuration and the warnings of the front-end rules."""
    from cloche.errors import ClocheError
    from cloche.oci.platform import Platform
    from cloche.plan.checks import Ignored, check_config, run_checks

    config = check_config(dockerfile.tree.directives.check, options.build_args)

    def base_env(reference: str, wanted: str | None) -> tuple[tuple[str, str], ...] | None:
        try:
            image = store.image(reference, Platform.parse(wanted) if wanted else platform)
        except (ClocheError, ValueError):
            return None
        pairs = (e.partition("=") for e in image.config.env or ())
        return tuple((k, v) for k, _, v in pairs)

    matcher = context.ignore
    ignored: Ignored | None = None
    if matcher.patterns and not matcher.has_exclusions:
        roots = any(p.text in ("*", "**", "**/*") for p in matcher.patterns)

        def ignored_path(path: str) -> bool:
            if path in (".", "/") and not roots:
                return False
            return bool(matcher.matches(path))

        ignored = ignored_path

    warnings = run_checks(dockerfile, config, build_args=options.build_args,
                          target=options.target, platform=options.platform,
                          all_stages=all_stages, base_env=base_env, ignored=ignored)
    warnings.sort(key=lambda w: w.line)  # as buildx lists them: by line, stable
    return config, warnings


def _warning_event(warning: CheckWarning) -> ev.BuildWarning:
    return ev.BuildWarning(warning.message, warning.line, rule=warning.rule, url=warning.url,
                           end_line=warning.end_line, file=warning.file)


def _lint_failure(raised: list[ev.BuildWarning], config: CheckConfig) -> None:
    """``# check=error=true``: BuildKit's error once any rule was raised."""
    if not config.error or not raised:
        return
    rules = ", ".join(dict.fromkeys(w.rule for w in raised))
    raise BuildError(f"lint violation found for rules: {rules}")


def _unused_build_args(plan: BuildPlan) -> str | None:
    """The legacy builder's warning for build args no ARG of the build declares (current
    BuildKit prints none, moby/buildkit#2128); the proxy args and the check arg are used."""
    from cloche.dockerfile.instructions import Arg
    from cloche.plan.checks import CHECK_ARG, unused_build_args_message

    declared = {d.name for s in plan.stages if s.reachable for c in s.expanded
                if isinstance(c, Arg) for d in c.args} | {CHECK_ARG, "SOURCE_DATE_EPOCH"}
    unused = plan.scope.unused_build_args(declared)
    return unused_build_args_message(unused) if unused else None


def _with_epoch(options: BuildOptions, plan: BuildPlan, listener: ev.Listener) -> BuildOptions:
    """SOURCE_DATE_EPOCH from a global ``ARG SOURCE_DATE_EPOCH=N`` default when no build
    arg gives it (engine/reproducible.py); an invalid default, or an invalid
    ``source-date-epoch=`` of an output, fails here, before any step. BuildKit's warning for
    ``rewrite-timestamp`` without an epoch."""
    from cloche.engine.reproducible import EPOCH_ARG, output_epoch, resolve_epoch, rewrites

    if options.source_date_epoch is None and EPOCH_ARG not in options.build_args:
        epoch = resolve_epoch(None, options.build_args, plan.scope.values)
        if epoch is not None:
            options = dataclasses.replace(options, source_date_epoch=epoch)
    for spec in options.outputs:
        attrs = dict(spec.attrs)
        if output_epoch(attrs, options.source_date_epoch) is None and rewrites(attrs):
            listener(ev.BuildWarning("rewrite-timestamp is specified, but no "
                                     "source-date-epoch was found"))
    return options


def _check_chroot_plan(plan: BuildPlan, file: str) -> None:
    """``RUN --network=none`` cannot be enforced without namespaces: refused before anything
    runs, at its line (a trigger's is refused when its step runs, dispatch/run.py)."""
    from cloche.dockerfile import instructions as ins

    for index in plan.reachable:
        for step in plan.stages[index].steps:
            instruction = step.instruction
            if isinstance(instruction, ins.Run) and instruction.network == "none":
                raise BuildError("RUN --network=none cannot be enforced with "
                                 "--isolation=chroot: the step would share the container's "
                                 "network", stage=plan.stages[index].display_name, file=file,
                                 line=instruction.line,
                                 hint="build with --isolation=namespaces where cloche may "
                                      "create namespaces (docs/isolation.md)")


def _overlay_notice(store: Store, listener: ev.Listener) -> None:
    """Which overlay the steps mount, chosen once per process (sandbox/overlay.py): fails
    now when there is none, says once when it is fuse-overlayfs because the kernel refused."""
    from cloche.sandbox.overlay import choose_driver

    store.builds_dir.mkdir(parents=True, exist_ok=True)  # the probe's scratch, on the store
    notice = choose_driver(store.builds_dir).notice
    if notice:
        listener(ev.BuildWarning(notice))


def _rootless_notice(options: BuildOptions, listener: ev.Listener) -> None:
    """A build without root (cloche.rootless) says once what it cannot apply here."""
    from cloche.rootless.identity import in_user_namespace
    from cloche.sandbox.cgroups import unavailable

    if not in_user_namespace():
        return
    limits = options.limits()
    if "pids" in unavailable(limits) and limits.pids is not None:
        listener(ev.BuildWarning(
            f"running without root: RUN steps get no process limit (the default of "
            f"{limits.pids} needs a cgroup this user may write; see docs/rootless.md)"))


def _open_context(options: BuildOptions) -> AbstractContextManager[BuildContext]:
    """The build's context as ``options`` name it (``-``: stdin), cleaned up after."""
    stdin = sys.stdin.buffer if options.context == "-" else None
    hint_file = Path(options.dockerfile) if options.dockerfile and options.dockerfile != "-" \
        else None
    return open_context(options.context, dockerfile=hint_file, stdin=stdin,
                        secrets=options.secrets)


def _read_dockerfile(options: BuildOptions, context: BuildContext) -> tuple[str, str]:
    """The Dockerfile's text and the name errors use for it."""
    if options.dockerfile_text is not None:
        return options.dockerfile_text, "Dockerfile"
    inside: Path | None = None  # a remote context's Dockerfile: read inside the whole context
    if context.remote is not None and context.dockerfile is not None:
        path = inside = context.dockerfile
    elif options.dockerfile and options.dockerfile != "-":
        path = Path(options.dockerfile)
    elif context.dockerfile is not None:
        path = context.dockerfile
    else:
        path = Path(options.context) / "Dockerfile"
    try:
        # Read inside its own directory, as BuildKit does: a Dockerfile that is a symlink to a
        # host file (an attacker's context) reaches nothing outside that directory. A remote
        # context's (-f sub/Dockerfile of a repository) is read inside the context's root,
        # so a symlinked folder of the repository cannot lead out of it either.
        data = read_regular_in_root(context.root, str(inside.relative_to(context.root)),
                                    what=f"the Dockerfile {path}") if inside is not None \
            else read_regular_in_root(path.parent, path.name, what=f"the Dockerfile {path}")
        text = io.TextIOWrapper(io.BytesIO(data)).read()  # as Path.read_text decodes it
        if inside is not None:
            return text, options.dockerfile or "Dockerfile"
        return text, str(path) if options.dockerfile else "Dockerfile"
    except FileNotFoundError:
        if inside is not None:
            raise ConfigError(f"no Dockerfile {options.dockerfile or 'Dockerfile'} in the build "
                              f"context {context.remote}",
                              hint="pass -f PATH (inside the context, or an absolute path "
                                   "on this machine)") from None
        link = _link_note(path)
        raise ConfigError(f"no Dockerfile at {path}{link}",
                          hint="pass -f PATH, or put a Dockerfile in the context") from None
    except NotRegularFileError as err:
        raise ConfigError(err.message) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file") from None


def _link_note(path: Path) -> str:
    """Why a Dockerfile that is a symlink was not found (its target, read inside its folder)."""
    try:
        return f" (a symlink to {os.readlink(path)!r}, resolved inside {path.parent})"
    except OSError:
        return ""
