"""The build engine: a planned build executed stage by stage into an image.

Its face is small: ``build(options, store=..., listener=...)`` (pipeline.py) runs a whole
build, ``BuildOptions`` (options.py) says what to build, ``events`` are what it reports.
The library's face (``cloche.api``) and the CLI use only these; every other module here is
the engine's own. Names load on first use: the CLI imports options before it knows whether
a build will run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {"build": "pipeline", "BuildResult": "pipeline", "check": "pipeline",
            "CheckReport": "pipeline", "prefetch_context": "fastwalk",
            "Prefetch": "fastwalk", "Listing": "fastwalk",
            "BuildOptions": "options", "OutputSpec": "options", "SecretSpec": "options"}

__all__ = ["BuildOptions", "BuildResult", "CheckReport", "Listing", "OutputSpec", "Prefetch", "SecretSpec",
           "build", "check", "prefetch_context"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


if TYPE_CHECKING:
    from cloche.engine.fastwalk import Listing, Prefetch, prefetch_context
    from cloche.engine.options import BuildOptions, OutputSpec, SecretSpec
    from cloche.engine.pipeline import BuildResult, CheckReport, build, check
