"""User and group names resolved in a stage's root filesystem, with Docker's rules.

Two different rule sets exist and both are needed:

- ``USER`` (the process identity of RUN, and of the image's config) follows runc's
  ``GetExecUser`` as BuildKit calls it: ``uid:gid`` in numbers is taken as is; otherwise the
  user is looked up by name or number in ``/etc/passwd`` (first match wins), a number missing
  from passwd is fine (GID 0, home ``/``), a name missing is an error; a group given by name
  or number is looked up in ``/etc/group``; without a group, the supplementary groups are those
  listing the user's name as a member. The primary group is always one of the supplementary
  groups too (BuildKit's ``ensureAdditionalGids``, as containerd does), so ``id`` lists it.
- ``COPY --chown`` follows BuildKit's file op: a name alone also takes the user's primary group,
  a number alone sets GID = UID, and no supplementary groups are involved.

Both files are read from the rootfs with symlinks confined to it (``paths.open_in_root``).
They live beside the confinement helpers, not in the sandbox: COPY/ADD --chown and WORKDIR
resolve users as well as RUN does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cloche.errors import ClocheError
from cloche.fs.paths import open_in_root

MAX_ID = 2**31 - 1
MAX_CHOWN_ID = 2**32 - 2
DEFAULT_HOME = "/"


class UnknownUserError(ClocheError, ValueError):
    """A user or group name that the rootfs's /etc/passwd or /etc/group does not have."""

    def __init__(self, message: str, *, name: str, kind: str, rootfs: Path) -> None:
        super().__init__(message)
        self.name = name
        self.kind = kind  # "user" or "group"
        self.rootfs = rootfs


class InvalidUserSpecError(ClocheError, ValueError):
    """A USER or --chown value that is not a valid user[:group]."""


@dataclass(frozen=True)
class ResolvedUser:
    """The identity a RUN process gets: IDs, supplementary groups and $HOME when unset.
    ``resolve_user`` always includes ``gid`` in ``additional_gids``."""

    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    home: str = "/root"


ROOT = ResolvedUser()


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def _read_lines(rootfs: Path, path: str) -> list[str] | None:
    """Lines of a small text file in the rootfs, or None when it does not exist."""
    try:
        fd = open_in_root(rootfs, path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(16 * 1024 * 1024)  # passwd/group files are small; bound them anyway
    return data.decode("utf-8", "replace").splitlines()


def _int_or_none(text: str) -> int | None:
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def read_passwd(rootfs: Path) -> list[PasswdEntry] | None:
    """Entries of the rootfs's /etc/passwd (malformed lines skipped), None when missing."""
    lines = _read_lines(rootfs, "/etc/passwd")
    if lines is None:
        return None
    entries = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(":")
        parts += [""] * (7 - len(parts))
        uid, gid = _int_or_none(parts[2]), _int_or_none(parts[3])
        if uid is None:
            continue
        entries.append(PasswdEntry(parts[0], uid, gid or 0, parts[5]))
    return entries


def read_group(rootfs: Path) -> list[GroupEntry] | None:
    """Entries of the rootfs's /etc/group (malformed lines skipped), None when missing."""
    lines = _read_lines(rootfs, "/etc/group")
    if lines is None:
        return None
    entries = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(":")
        parts += [""] * (4 - len(parts))
        gid = _int_or_none(parts[2])
        if gid is None:
            continue
        members = tuple(m.strip() for m in parts[3].split(",") if m.strip())
        entries.append(GroupEntry(parts[0], gid, members))
    return entries


def _split(spec: str) -> tuple[str, str | None]:
    user, sep, group = spec.partition(":")
    return user, (group if sep else None)


def _numeric(text: str, what: str, spec: str, limit: int = MAX_ID) -> int | None:
    """The number in ``text``, None when it is not all digits; an error when out of range."""
    if text.isascii() and text.isdigit():
        value = int(text)
        if value > limit:
            raise InvalidUserSpecError(f"{what} ID {text} in {spec!r} is out of range")
        return value
    if text.startswith("-") and text[1:].isdigit():
        raise InvalidUserSpecError(f"{what} ID {text} in {spec!r} is negative")
    return None


def _home_for(passwd: list[PasswdEntry] | None, uid: int) -> str:
    for entry in passwd or ():
        if entry.uid == uid:
            return entry.home or DEFAULT_HOME
    return DEFAULT_HOME


def _find_group(groups: list[GroupEntry] | None, arg: str) -> GroupEntry | None:
    for entry in groups or ():
        if entry.name == arg or str(entry.gid) == arg:
            return entry
    return None


def resolve_user(rootfs: Path, spec: str) -> ResolvedUser:
    """The identity for ``USER spec`` in the stage whose filesystem is ``rootfs``.

    An empty spec means root. Raises UnknownUserError when a name is not found.
    """
    user_arg, group_arg = _split(spec.strip())
    passwd = read_passwd(rootfs)
    uid_num = _numeric(user_arg, "user", spec) if user_arg else 0
    gid_num = _numeric(group_arg, "group", spec) if group_arg else None
    if uid_num is not None and gid_num is not None:
        # BuildKit's fast path: both numbers, no lookup and no supplementary groups.
        return ResolvedUser(uid_num, gid_num, (gid_num,), _home_for(passwd, uid_num))

    matched: PasswdEntry | None = None
    if user_arg:
        for entry in passwd or ():
            if entry.name == user_arg or str(entry.uid) == user_arg:
                matched = entry
                break
    if matched is not None:
        uid, gid, home, name = matched.uid, matched.gid, matched.home or DEFAULT_HOME, matched.name
    elif uid_num is not None:
        uid, gid, home, name = uid_num, 0, _home_for(passwd, uid_num), ""
    elif user_arg == "root":  # uid 0 by definition, even in an image without /etc/passwd
        uid, gid, home, name = 0, 0, DEFAULT_HOME, ""
    else:
        where = "no /etc/passwd in the image" if passwd is None else "no matching entries in passwd file"
        raise UnknownUserError(f"unable to find user {user_arg}: {where}",
                               name=user_arg, kind="user", rootfs=rootfs)

    groups = read_group(rootfs)
    additional: tuple[int, ...] = ()
    if group_arg:
        found = _find_group(groups, group_arg)
        if found is not None:
            gid = found.gid
        elif gid_num is not None:
            gid = gid_num
        else:
            where = "no /etc/group in the image" if groups is None else "no matching entries in group file"
            raise UnknownUserError(f"unable to find group {group_arg}: {where}",
                                   name=group_arg, kind="group", rootfs=rootfs)
    elif name:
        additional = tuple(g.gid for g in groups or () if name in g.members)
    if gid not in additional:  # BuildKit puts the primary group first among them
        additional = (gid, *additional)
    return ResolvedUser(uid, gid, additional, home)


def workdir_owner(rootfs: Path, spec: str) -> tuple[int, int]:
    """The owner of a folder WORKDIR creates under ``USER spec``, as BuildKit's file operation
    takes it: a bare number no passwd entry names is ``N:N`` (not RUN's ``N:0``), and root is
    ``0:0`` even in an image without /etc/passwd; anything else as ``resolve_user``."""
    user_arg, group_arg = _split(spec.strip())
    user = resolve_user(rootfs, spec)
    if group_arg is None and _int_or_none(user_arg) is not None and not any(
            str(e.uid) == user_arg for e in read_passwd(rootfs) or ()):
        return user.uid, user.uid
    return user.uid, user.gid


def resolve_chown(rootfs: Path, spec: str, *, strict: bool = True) -> tuple[int, int]:
    """``(uid, gid)`` for ``COPY --chown=spec`` into the stage whose filesystem is ``rootfs``.

    BuildKit's rules: a user name alone also sets the group to the user's primary group; a
    number alone sets GID = UID; ``user:`` with an empty group means GID 0. BuildKit itself
    silently takes 0 for a user name it cannot find and keeps the user's GID for a group name
    it cannot find; ``strict=False`` does exactly that, while the default raises
    UnknownUserError naming the missing user or group (a typo should not make root-owned files).
    """
    spec = spec.strip()
    if not spec:
        raise InvalidUserSpecError("empty --chown value")
    user_arg, group_arg = _split(spec)
    uid = _chown_number(user_arg, "user", spec, strict)
    if uid is not None:
        gid = uid
    else:
        passwd = read_passwd(rootfs)
        entry = next((e for e in passwd or () if e.name == user_arg), None) if user_arg else None
        if entry is not None:
            uid, gid = entry.uid, entry.gid
        elif strict and user_arg and user_arg != "root":  # root is 0 without a passwd file
            where = "no /etc/passwd in the image" if passwd is None else "no matching entries in passwd file"
            raise UnknownUserError(f"unable to find user {user_arg}: {where}",
                                   name=user_arg, kind="user", rootfs=rootfs)
        else:
            uid, gid = 0, 0
    if group_arg is None:
        return uid, gid
    gnum = _chown_number(group_arg, "group", spec, strict)
    if gnum is not None:
        return uid, gnum
    if not group_arg:
        return uid, 0
    groups = read_group(rootfs)
    found = next((g for g in groups or () if g.name == group_arg), None)
    if found is not None:
        return uid, found.gid
    if strict:
        where = "no /etc/group in the image" if groups is None else "no matching entries in group file"
        raise UnknownUserError(f"unable to find group {group_arg}: {where}",
                               name=group_arg, kind="group", rootfs=rootfs)
    return uid, gid


def _chown_number(text: str, what: str, spec: str, strict: bool) -> int | None:
    """A --chown ID; out-of-range numbers are errors when strict, names (unknown) otherwise."""
    if strict:  # any 32-bit ID but -1, as BuildKit takes them (USER is limited by runc)
        return _numeric(text, what, spec, MAX_CHOWN_ID)
    if text.isascii() and text.isdigit() and int(text) <= 2**32 - 1:
        return int(text)
    return None
