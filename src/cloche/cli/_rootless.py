"""Rootless mode for the commands that write or remove image trees (docs/rootless.md).

``cloche build`` run by an ordinary user first enters a user namespace where it is root
(``cloche.rootless.userns``); ``prune`` and ``du`` enter it when they can, since a build's
trees hold files owned by the user's subordinate ids, which only that namespace may remove
or read. Called first thing in the command, before any thread starts.
"""

from __future__ import annotations

from cloche.errors import ClocheError


def enter_user_namespace(*, required: bool = True) -> None:
    """Become root of a user namespace unless already root. ``required``: a host that does
    not allow it is an error (RootlessError with what to change); else the command goes on
    as the user."""
    from cloche.rootless import enter

    try:
        enter()
    except ClocheError:
        if required:
            raise
