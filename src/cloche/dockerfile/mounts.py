"""``RUN --mount=...`` specs as typed values, parsed with BuildKit's rules.

A spec is a CSV list of ``key=value`` fields (``type=cache,target=/root/.cache,sharing=locked``).
BuildKit parses it once when the Dockerfile is read (so a bad key fails early, before any step
runs) and again at dispatch time with variables expanded; :func:`parse_mount` does both, the
second when given an ``expand`` function. The build engine reads the resulting :class:`Mount`.
"""

from __future__ import annotations

import csv
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass

from cloche.errors import DockerfileError

__all__ = ["Mount", "MountError", "MOUNT_TYPES", "check_target", "parse_mount", "parse_size"]

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING_MODES = ("shared", "private", "locked")


class MountError(DockerfileError):
    """A ``--mount`` spec BuildKit would reject."""


@dataclass(frozen=True)
class Mount:
    """One ``RUN --mount``. ``None`` means "not given": the engine applies the type's default
    (secret target ``/run/secrets/ID``, ssh id ``default``, cache id = target...)."""

    type: str = "bind"
    target: str | None = None
    source: str | None = None
    from_: str | None = None
    readonly: bool = True
    id: str | None = None
    sharing: str | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    required: bool = False
    size: int | None = None
    env: str | None = None
    spec: str = ""


def _bool(key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise MountError(f"invalid value for {key}: {value}")


def _number(key: str, value: str, base: int) -> int:
    try:
        number = int(value, base)
    except ValueError:
        raise MountError(f"invalid value {value} for {key}") from None
    if not 0 <= number < 2**32:
        raise MountError(f"invalid value {value} for {key}")
    return number


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?$", re.IGNORECASE)


def parse_size(value: str) -> int:
    """A size like ``64m``, ``1g``, ``1024`` in bytes (binary multiples, like Docker's units)."""
    match = _SIZE.match(value.strip())
    if not match:
        raise MountError(f"invalid size: {value!r}")
    power = " kmgtp".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * 1024**power)


def parse_mount(spec: str, expand: Callable[[str], str] | None = None) -> Mount:
    """Parse one ``--mount`` value; ``expand`` (if given) is applied to every value first."""
    try:
        fields = next(csv.reader([spec]), [])
    except csv.Error as err:
        raise MountError(f"invalid mount spec {spec!r}: {err}") from None
    kind = "bind"
    for field in fields:
        key, _, value = field.partition("=")
        if key.lower() == "type":
            if value not in MOUNT_TYPES:
                raise MountError(f"unsupported mount type {value!r}",
                                 hint=f"use one of {', '.join(MOUNT_TYPES)}")
            kind = value
    values: dict[str, object] = {"type": kind, "spec": spec}
    ro_auto = True
    for field in fields:
        key, has_value, value = field.partition("=")
        key = key.lower()
        if not has_value:
            if key in ("readonly", "ro"):
                values["readonly"], ro_auto = True, False
            elif key in ("readwrite", "rw"):
                values["readonly"], ro_auto = False, False
            elif key == "required" and kind in ("secret", "ssh"):
                values["required"] = True
            elif key == "required":
                raise MountError(f"unexpected key '{key}' for mount type '{kind}'")
            else:
                raise MountError(f"invalid field '{field}' must be a key=value pair")
            continue
        if expand is not None:
            value = expand(value)
        if key == "type":
            continue
        if key == "from":
            values["from_"] = value
        elif key in ("source", "src"):
            values["source"] = value
        elif key in ("target", "dst", "destination"):
            values["target"] = value
        elif key in ("readonly", "ro"):
            values["readonly"], ro_auto = _bool(key, value), False
        elif key in ("readwrite", "rw"):
            values["readonly"], ro_auto = not _bool(key, value), False
        elif key == "required":
            if kind not in ("secret", "ssh"):
                raise MountError(f"unexpected key '{key}' for mount type '{kind}'")
            values["required"] = _bool(key, value)
        elif key == "size":
            if kind != "tmpfs":
                raise MountError(f"unexpected key 'size' for mount type '{kind}'")
            values["size"] = parse_size(value)
        elif key == "id":
            values["id"] = value
        elif key == "sharing":
            if kind != "cache":
                raise MountError(f"invalid cache sharing set for {kind} mount")
            if value not in SHARING_MODES:
                raise MountError(f"unsupported sharing value {value!r}",
                                 hint=f"use one of {', '.join(SHARING_MODES)}")
            values["sharing"] = value
        elif key == "mode":
            values["mode"] = _number(key, value, 8)
        elif key in ("uid", "gid"):
            values[key] = _number(key, value, 10)
        elif key == "env":
            if kind != "secret":
                raise MountError(f"unexpected key 'env' for mount type '{kind}'")
            values["env"] = value
        else:
            raise MountError(f"unexpected key '{key}' in '{field}'")
    if kind not in ("secret", "ssh", "cache"):
        for key in ("mode", "uid", "gid"):
            if key in values:
                raise MountError(f"{key} not allowed for {kind!r} type mounts")
    if ro_auto:
        values["readonly"] = kind not in ("cache", "tmpfs")
    if kind == "cache" and "sharing" not in values:
        values["sharing"] = "shared"
    if kind == "secret":
        if "from_" in values:
            raise MountError("secret mount should not have a from")
        if not any(k in values for k in ("source", "target", "id")):
            raise MountError("one of source, target or id is required for a secret mount")
        if "source" in values and "id" in values:
            raise MountError("both source and id can't be set")
    if kind in ("bind", "cache", "tmpfs") and not values.get("target"):
        raise MountError(f"mount target required for {kind} mount")
    target = values.get("target")
    if isinstance(target, str) and target.startswith("/"):
        check_target(target)  # a relative one is checked once joined to WORKDIR
    return Mount(**values)  # type: ignore[arg-type]


KERNEL_DIRS = ("proc", "sys", "dev")


def check_target(target: str) -> None:
    """Refuse a mount target inside /proc, /sys or /dev (``target`` is absolute).

    The step's kernel file systems are mounted there before its mounts: /proc/1/root is the
    host's root at that time, and runc (under BuildKit) refuses any target inside /proc.
    cloche refuses /sys and /dev as well (the heredoc scripts it mounts itself under
    /dev/pipes aside); symlinks that lead there are refused by the sandbox.
    """
    parts = [p for p in posixpath.normpath(target).split("/") if p]
    if parts and parts[0] in KERNEL_DIRS:
        raise MountError(f"mount target {target} is inside /{parts[0]}",
                         hint="RUN --mount cannot mount on /proc, /sys or /dev; "
                              "use another target, such as /mnt")
