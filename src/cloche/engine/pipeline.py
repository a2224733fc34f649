"""The engine's one entry point: options in, a built and exported image out.

``build(options, store=..., listener=...)`` opens the context, reads the Dockerfile, plans,
executes the plan and sends the image to its outputs. The library's face (``cloche.api``)
and the CLI turn their strings and flags into ``BuildOptions`` and call this; neither reaches
into the modules behind it.
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

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

__all__ = ["BuildResult", "DiskUsage", "Prefetch", "PruneReport", "build", "disk_usage",
           "prefetch_context", "prune"]


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
    from cloche.oci.platform import Platform
    from cloche.plan.entitlements import check_plan
    from cloche.plan.graph import build_plan
    from cloche.sandbox.runner import require_root

    try:
        require_root()
    except SandboxError as err:
        raise SandboxError("cloche build needs root for its sandbox (namespaces and overlayfs), "
                           "or a user namespace where it is root",
                           hint="call cloche.rootless.enter() first thing in the program "
                                "(before any thread starts), run the `cloche build` command "
                                "(it does that itself), or run as root; see docs/rootless.md") \
            from err
    stdin = sys.stdin.buffer if options.context == "-" else None
    hint_file = Path(options.dockerfile) if options.dockerfile and options.dockerfile != "-" \
        else None
    from cloche.sandbox.cgroups import require

    require(options.limits())  # --memory/--pids-limit on a host without cgroups: fail now
    _rootless_notice(options, listener)
    sweep_stale(store)  # what killed builds left: scratch, cgroups, old plaintext secrets
    with store.lease(), open_context(options.context, dockerfile=hint_file,
                                     stdin=stdin) as context:
        text, name = _read_dockerfile(options, context.dockerfile)
        dockerfile = parse_dockerfile(text, file=name)
        platform = Platform.parse(options.platform) if options.platform else Platform.host()
        plan = build_plan(dockerfile, options.target, options.build_args,
                          platform=str(platform) if options.platform else None)
        check_plan(plan, options.allow)  # --allow: refused before anything runs
        try:
            outcome = Executor(plan, options, store, context, listener, platform,
                               prefetch=prefetch).run()
        except BuildError as err:
            if err.line and err.file in (None, name) and err.source is None:
                err.source = text  # for the excerpt of the failing instruction
            raise
        exported = export(outcome.image, options, store)
    listener(ev.BuildFinished(str(outcome.image.digest), outcome.seconds, outcome.image.size,
                              exported.names))
    return BuildResult(outcome.image, exported.names, exported.pushed, outcome.stages,
                       outcome.seconds)


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


def _read_dockerfile(options: BuildOptions, context_dockerfile: Path | None) -> tuple[str, str]:
    """The Dockerfile's text and the name errors use for it."""
    if options.dockerfile_text is not None:
        return options.dockerfile_text, "Dockerfile"
    if options.dockerfile and options.dockerfile != "-":
        path = Path(options.dockerfile)
    elif context_dockerfile is not None:
        path = context_dockerfile
    else:
        path = Path(options.context) / "Dockerfile"
    try:
        # Read inside its own directory, as BuildKit does: a Dockerfile that is a symlink to a
        # host file (an attacker's context) reaches nothing outside that directory.
        data = read_regular_in_root(path.parent, path.name, what=f"the Dockerfile {path}")
        text = io.TextIOWrapper(io.BytesIO(data)).read()  # as Path.read_text decodes it
        return text, str(path) if options.dockerfile else "Dockerfile"
    except FileNotFoundError:
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
