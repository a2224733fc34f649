"""The contract between the runner and the sandbox's init process, as typed values.

The runner builds an ``InitConfig`` and writes ``encode()`` to the init's stdin; the init
reads it back with ``InitConfig.decode``, which checks every field's type, so a change on one
side that the other does not know fails loudly at the boundary instead of as a KeyError deep
in PID 1. Standard library only: the init imports this in a fresh interpreter on every step.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal


class InitConfigError(ValueError):
    """The init was handed a configuration it cannot read."""


@dataclass(frozen=True)
class InitMount:
    """One extra mount, with ``target`` already created (as a stub) on the host side."""

    kind: Literal["bind", "tmpfs", "secret"]
    path: str  # where it appears in the container, for messages
    target: str  # the host path of the mount point inside the rootfs
    source: str | None = None  # secret: an empty host directory its private tmpfs goes on
    readonly: bool = False
    size: int | None = None
    mode: int | None = None
    fd: int | None = None  # secret: the init's descriptor of a memfd holding the value
    uid: int | None = None  # secret: the file's owner
    gid: int | None = None


@dataclass(frozen=True)
class InitConfig:
    """Everything PID 1 needs; host paths are those of the stubs the runner created."""

    parent_pid: int
    status_fd: int
    rootfs: str
    argv: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    hostname: str
    network: str
    init: bool
    insecure: bool
    proc: str
    dev: str
    sys: str
    files: tuple[tuple[str, str], ...]  # (host file, host target in the rootfs), read-only
    mounts: tuple[InitMount, ...] = ()
    rlimits: tuple[tuple[str, int, int], ...] = ()  # --ulimit: (name, soft, hard); -1: none
    shm_size: int = 64 * 1024 * 1024  # bytes of the step's /dev/shm tmpfs (--shm-size)
    # network "default": the init's end of a pipe the runner writes one byte to once
    # slirp4netns has wired the step's namespace (EOF: it never will); -1 otherwise
    net_fd: int = -1

    def encode(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> InitConfig:
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict):
                raise InitConfigError("the configuration is not an object")
            mounts = tuple(InitMount(**_checked(InitMount, m)) for m in raw.pop("mounts", ()))
            fields = _checked(cls, raw)
            fields["argv"] = tuple(fields["argv"])
            fields["env"] = tuple(fields["env"])
            fields["groups"] = tuple(fields["groups"])
            fields["files"] = tuple((str(a), str(b)) for a, b in fields["files"])
            if "rlimits" in fields:
                fields["rlimits"] = tuple(_rlimit(r) for r in fields["rlimits"])
            return cls(**fields, mounts=mounts)
        except (TypeError, ValueError) as e:
            if isinstance(e, InitConfigError):
                raise
            raise InitConfigError(f"bad init configuration: {e}") from None


def _rlimit(raw: Any) -> tuple[str, int, int]:
    if not (isinstance(raw, list) and len(raw) == 3 and isinstance(raw[0], str)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in raw[1:])):
        raise InitConfigError(f"InitConfig.rlimits: unexpected {raw!r}")
    return raw[0], raw[1], raw[2]


_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "str": (str,), "bool": (bool,), "str | None": (str, type(None)),
    "int | None": (int, type(None)),
}


def _checked(cls: type, raw: Any) -> dict[str, Any]:
    """``raw``'s fields for ``cls``, each of the declared type (lists for tuples)."""
    if not isinstance(raw, dict):
        raise InitConfigError(f"{cls.__name__}: not an object")
    known = {f.name: f for f in dataclasses.fields(cls) if f.name != "mounts"}
    unknown = set(raw) - set(known)
    if unknown:
        raise InitConfigError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    out: dict[str, Any] = {}
    for name, f in known.items():
        if name not in raw:
            if f.default is dataclasses.MISSING:
                raise InitConfigError(f"{cls.__name__}: missing field {name!r}")
            continue
        value, kind = raw[name], str(f.type)
        if kind.startswith("tuple"):
            ok = isinstance(value, list)
        elif kind.startswith("Literal"):
            ok = isinstance(value, str) and repr(value) in kind
        else:
            ok = isinstance(value, _TYPES[kind]) and not (
                kind.startswith("int") and isinstance(value, bool))
        if not ok:
            raise InitConfigError(f"{cls.__name__}.{name}: unexpected {type(value).__name__}")
        out[name] = value
    return out
