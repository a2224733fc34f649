"""The sandbox for RUN steps, built from kernel features with no external runtime.

``overlay`` mounts a stage's layers so that the upper directory is the step's diff;
``runner.run`` executes one step in new mount, PID, UTS and IPC namespaces (and network, for
``--network=none``) over the merged directory. Running steps needs root for now. Resolving
paths in a rootfs and USER/--chown values lives in ``cloche.fs``: COPY and ADD need it too.

The names below are loaded on first use: every RUN step starts ``cloche.sandbox.init`` in a
fresh interpreter, which should not pay for importing the caller's side of the sandbox.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "OverlayError": "overlay", "mount_overlay": "overlay", "prune_copied_up": "overlay",
    "SandboxSetupError": "runner", "StepCancelled": "cancel", "CancelScope": "cancel",
    "hosts_file": "runner", "require_root": "runner", "run": "runner",
    "DEFAULT_HOSTNAME": "spec", "DEFAULT_PATH": "spec", "Mount": "spec", "RunResult": "spec",
    "RunSpec": "spec", "Sink": "spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:
    from cloche.sandbox.cancel import CancelScope, StepCancelled
    from cloche.sandbox.overlay import OverlayError, mount_overlay, prune_copied_up
    from cloche.sandbox.runner import SandboxSetupError, hosts_file, require_root, run
    from cloche.sandbox.spec import DEFAULT_HOSTNAME, DEFAULT_PATH, Mount, RunResult, RunSpec, Sink
