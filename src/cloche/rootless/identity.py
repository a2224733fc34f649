"""Who the caller is on the host, once cloche runs in its own user namespace.

``cloche.rootless.userns.enter`` moves a non-root caller into a user namespace where it is
root (uid and gid 0 map to the caller, 1 and up to its subordinate ranges) and records the
caller's host ids in ``$CLOCHE_ROOTLESS``. Inside, ``os.geteuid()`` is 0, so every decision
that means "is this the host's root?" (the default store, the configuration file) asks
``host_root()`` instead. The variable alone is not trusted: it counts only when this process
really is in a user namespace whose uid 0 is that caller, so setting it by hand changes
nothing for the host's root. Standard library only: the store and the registry client use it.
"""

from __future__ import annotations

import os

ENV = "CLOCHE_ROOTLESS"


def _uid_map() -> tuple[tuple[int, int, int], ...]:
    try:
        with open("/proc/self/uid_map", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return ()
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) == 3 and all(x.isdigit() for x in fields):
            out.append((int(fields[0]), int(fields[1]), int(fields[2])))
    return tuple(out)


def caller() -> tuple[int, int] | None:
    """The caller's (uid, gid) on the host when this process runs in cloche's rootless user
    namespace; None otherwise (running as the host's root, or as a user outside it)."""
    value = os.environ.get(ENV, "")
    uid_text, sep, gid_text = value.partition(":")
    if not sep or not uid_text.isdigit() or not gid_text.isdigit() or os.geteuid() != 0:
        return None
    uid, mapping = int(uid_text), _uid_map()
    if not _is_namespace(mapping) or not any(inside == 0 and outside == uid
                                             for inside, outside, _ in mapping):
        return None  # the host's root (identity map) is never a user, whatever it says
    return uid, int(gid_text)


def is_rootless() -> bool:
    """Whether this process is cloche in its rootless user namespace."""
    return caller() is not None


def host_root() -> bool:
    """Whether this process is the host's root (not root of cloche's user namespace)."""
    return os.geteuid() == 0 and caller() is None


def _is_namespace(mapping: tuple[tuple[int, int, int], ...]) -> bool:
    return mapping not in ((), ((0, 0, 4294967295),))


def in_user_namespace() -> bool:
    """Whether this process runs in a user namespace other than the host's (cloche's own,
    or a rootless container's): its uid map is not the whole identity map."""
    return _is_namespace(_uid_map())
