"""Rootless mode: building as an ordinary user in a user namespace (docs/rootless.md).

``identity`` says who the caller is on the host (the store and the registry client ask it),
``idmap`` reads the subordinate ranges, ``userns.enter`` moves the process into the
namespace. The package uses nothing of cloche but its errors.

A program that calls ``cloche.build()`` as an ordinary user calls ``cloche.rootless.enter()``
first, before it starts any thread: the process then goes on as root of the namespace (the
library cannot move a running, threaded program there by itself, nor re-run it).
"""

from __future__ import annotations


def enter() -> bool:
    """Enter cloche's user namespace unless root already; True when entered. Raises
    ``RootlessError`` (a ``SandboxError``) saying what the host lacks."""
    from cloche.rootless.userns import enter as enter_namespace

    return enter_namespace()
