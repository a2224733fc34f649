"""``--call targets`` and ``--call outline``: what a Dockerfile offers, without building.

BuildKit answers these frontend subrequests from the Dockerfile alone; so does cloche: the
context is opened only to read the Dockerfile, nothing is pulled and no step runs. The
reports themselves are plan/outline.py's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cloche.engine.context import open_context
from cloche.engine.options import BuildOptions
from cloche.errors import ConfigError

__all__ = ["SUBREQUESTS", "subrequest"]

SUBREQUESTS = ("outline", "targets")


def subrequest(options: BuildOptions, what: str) -> dict[str, Any]:
    """The ``targets`` list or the ``outline`` of the target, as BuildKit's JSON."""
    from cloche.dockerfile.stages import parse_dockerfile
    from cloche.engine.pipeline import _read_dockerfile
    from cloche.plan.graph import build_plan
    from cloche.plan.outline import outline, targets

    if what not in SUBREQUESTS:
        raise ConfigError(f"unknown subrequest {what!r}", hint="outline or targets")
    stdin = sys.stdin.buffer if options.context == "-" else None
    hint_file = Path(options.dockerfile) if options.dockerfile and options.dockerfile != "-" \
        else None
    with open_context(options.context, dockerfile=hint_file, stdin=stdin,
                      secrets=options.secrets) as context:
        text, name = _read_dockerfile(options, context)
    dockerfile = parse_dockerfile(text, file=name)
    if what == "targets":
        return targets(dockerfile)
    plan = build_plan(dockerfile, options.target, options.build_args, platform=options.platform)
    return outline(plan, options.build_args)
