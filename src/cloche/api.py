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
from typing import Any

from cloche.engine import events as ev
from cloche.engine.options import BuildOptions, OutputSpec, SecretSpec, parse_output, parse_secret
from cloche.engine.pipeline import BuildResult, Prefetch, prefetch_context
from cloche.store import Store


def build(options: BuildOptions | str = ".", *, listener: ev.Listener | None = None,
          tags: Sequence[str] = (), build_args: Mapping[str, str] | None = None,
          target: str | None = None, dockerfile: str | None = None,
          outputs: Sequence[str | OutputSpec] = (), secrets: Sequence[str | SecretSpec] = (),
          prefetch: Prefetch | None = None, **more: Any) -> BuildResult:
    """Build an image as ``docker build`` would and store it under ``tags``.

    ``options`` is a BuildOptions, or the context directory with the keyword arguments
    spelled like the CLI's flags (``no_cache=True``, ``platform="linux/arm64"``, ``root=``
    for the store...). ``listener`` receives typed progress events from worker threads.
    Two builds may run at once in threads of one process: each has its own cancel scope.
    """
    if not isinstance(options, BuildOptions):
        options = BuildOptions(
            context=str(options), tags=tuple(tags), build_args=dict(build_args or {}),
            target=target, dockerfile=dockerfile,
            outputs=tuple(o if isinstance(o, OutputSpec) else parse_output(o) for o in outputs),
            secrets=tuple(s if isinstance(s, SecretSpec) else parse_secret(s) for s in secrets),
            **more)
    if prefetch is None:
        prefetch = prefetch_context(options.context)
    from cloche.engine.pipeline import build as run_build

    return run_build(options, store=Store.open(options.root), listener=listener or ev.ignore,
                     prefetch=prefetch)


def _root(root: str | Path | None) -> Path | None:
    return Path(root) if root is not None else None


__all__ = ["BuildResult", "build"]
