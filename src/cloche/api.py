"""The library's front door: ``cloche.build(...)`` and friends, with plain strings in.

    import cloche
    result = cloche.build(".", tags=["app:1.0"], build_args={"VERSION": "1.0"})
    print(result.digest, result.image.config.entrypoint)

Everything here is a thin layer over the modules below it; the CLI calls the same functions.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cloche.build import events as ev
from cloche.build.options import BuildOptions, OutputSpec, SecretSpec, parse_output, parse_secret
from cloche.errors import ConfigError, SandboxError
from cloche.oci.digest import Digest
from cloche.oci.image import Image
from cloche.store import Store


@dataclass(frozen=True)
class BuildResult:
    """The built image, its digests, the names it got, and what each stage did."""

    image: Image
    names: tuple[str, ...]
    pushed: tuple[str, ...]
    stages: tuple[object, ...]
    seconds: float

    @property
    def digest(self) -> Digest:
        """The manifest digest (what a registry and ``docker push`` show)."""
        return self.image.digest

    @property
    def image_id(self) -> Digest:
        """The config digest (what ``docker images`` shows as IMAGE ID)."""
        return self.image.config_digest


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
        return path.read_text(), str(path) if options.dockerfile else "Dockerfile"
    except FileNotFoundError:
        raise ConfigError(f"no Dockerfile at {path}",
                          hint="pass -f PATH, or put a Dockerfile in the context") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file") from None


def build(options: BuildOptions | str = ".", *, listener: ev.Listener | None = None,
          tags: Sequence[str] = (), build_args: Mapping[str, str] | None = None,
          target: str | None = None, dockerfile: str | None = None,
          outputs: Sequence[str | OutputSpec] = (), secrets: Sequence[str | SecretSpec] = (),
          prefetch: object = None, **more: object) -> BuildResult:
    """Build an image as ``docker build`` would and store it under ``tags``.

    ``options`` is a BuildOptions, or the context directory with the keyword arguments
    spelled like the CLI's flags. ``listener`` receives progress events from worker threads.
    """
    from cloche.build.context import open_context
    from cloche.build.executor import Executor
    from cloche.build.outputs import export
    from cloche.dockerfile.stages import parse_dockerfile
    from cloche.oci.platform import Platform
    from cloche.plan.graph import build_plan
    from cloche.sandbox.runner import require_root

    if prefetch is None and isinstance(options, BuildOptions) and options.context != "-" \
            and os.access(options.context, os.R_OK | os.X_OK) and Path(options.context).is_dir():
        # Start listing the context now: find's stat calls overlap the imports below.
        from cloche.build.fastwalk import Prefetch

        prefetch = Prefetch(Path(options.context).resolve())
    if not isinstance(options, BuildOptions):
        options = BuildOptions(
            context=str(options), tags=tuple(tags), build_args=dict(build_args or {}),
            target=target, dockerfile=dockerfile,
            outputs=tuple(o if isinstance(o, OutputSpec) else parse_output(o) for o in outputs),
            secrets=tuple(s if isinstance(s, SecretSpec) else parse_secret(s) for s in secrets),
            **more)  # type: ignore[arg-type]
    listener = listener or ev.ignore
    try:
        require_root()
    except SandboxError as err:
        raise SandboxError("cloche build needs root for its sandbox (namespaces and overlayfs)",
                           hint="run it as root, e.g. with sudo; a rootless mode is planned") \
            from err
    store = Store.open(options.root)
    stdin = sys.stdin.buffer if options.context == "-" else None
    hint_file = Path(options.dockerfile) if options.dockerfile and options.dockerfile != "-" else None
    with store.lease(), open_context(options.context, dockerfile=hint_file,
                                     stdin=stdin) as context:
        text, name = _read_dockerfile(options, context.dockerfile)
        dockerfile_value = parse_dockerfile(text, file=name)
        platform = Platform.parse(options.platform) if options.platform else Platform.host()
        plan = build_plan(dockerfile_value, options.target, options.build_args,
                          platform=str(platform) if options.platform else None)
        outcome = Executor(plan, options, store, context, listener, platform,
                           prefetch=prefetch).run()
        exported = export(outcome.image, options, store)
    listener(ev.BuildFinished(str(outcome.image.digest), outcome.seconds, outcome.image.size,
                              exported.names))
    return BuildResult(outcome.image, exported.names, exported.pushed, outcome.stages,
                       outcome.seconds)


__all__ = ["BuildResult", "build"]
