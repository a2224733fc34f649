"""USER and --chown resolution against real passwd/group files in a rootfs directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cloche.errors import ClocheError, UnsafePathError
from cloche.fs.paths import resolve_in_root
from cloche.fs.users import (
    InvalidUserSpecError,
    ResolvedUser,
    UnknownUserError,
    resolve_chown,
    resolve_user,
    workdir_owner,
)

PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "# a comment\n"
          "app:x:1000:1000:app:/home/app:/bin/sh\n"
          "svc:x:1001:50::/srv:/bin/false\n"
          "broken:x:notanumber:1\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\napp:x:1000:\nstaff:x:50:app,svc\nwheel:x:10:root,app\nnogroup:x:65534:\n"


@pytest.fixture()
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    (tmp_path / "etc" / "group").write_text(GROUP)
    return tmp_path


@pytest.mark.parametrize("spec,expected", [
    ("", ResolvedUser(0, 0, (0,), "/root")),       # no USER: only the primary group
    ("root", ResolvedUser(0, 0, (0, 10), "/root")),  # USER root / USER 0: groups listing root
    ("0", ResolvedUser(0, 0, (0, 10), "/root")),
    ("app", ResolvedUser(1000, 1000, (1000, 50, 10), "/home/app")),
    ("1000", ResolvedUser(1000, 1000, (1000, 50, 10), "/home/app")),
    ("svc", ResolvedUser(1001, 50, (50,), "/srv")),
    ("app:staff", ResolvedUser(1000, 50, (50,), "/home/app")),
    ("app:50", ResolvedUser(1000, 50, (50,), "/home/app")),
    ("app:4242", ResolvedUser(1000, 4242, (4242,), "/home/app")),
    ("1000:1000", ResolvedUser(1000, 1000, (1000,), "/home/app")),  # fast path: no lookup
    ("4321", ResolvedUser(4321, 0, (0,), "/")),                # numeric, not in passwd
    ("4321:7", ResolvedUser(4321, 7, (7,), "/")),
    ("4321:wheel", ResolvedUser(4321, 10, (10,), "/")),
    ("nobody", ResolvedUser(65534, 65534, (65534,), "/nonexistent")),
])
def test_resolve_user(rootfs: Path, spec: str, expected: ResolvedUser) -> None:
    assert resolve_user(rootfs, spec) == expected


def test_missing_user_name_is_an_error_naming_it(rootfs: Path) -> None:
    with pytest.raises(UnknownUserError) as info:
        resolve_user(rootfs, "ghost")
    assert "ghost" in str(info.value) and info.value.kind == "user"
    assert isinstance(info.value, ClocheError) and isinstance(info.value, ValueError)


def test_missing_group_name_is_an_error_naming_it(rootfs: Path) -> None:
    with pytest.raises(UnknownUserError) as info:
        resolve_user(rootfs, "app:ghosts")
    assert "ghosts" in str(info.value) and info.value.kind == "group"


def test_no_passwd_file(tmp_path: Path) -> None:
    assert resolve_user(tmp_path, "1000") == ResolvedUser(1000, 0, (0,), "/")
    with pytest.raises(UnknownUserError, match="no /etc/passwd"):
        resolve_user(tmp_path, "app")


def test_without_passwd_root_is_0_0_and_workdir_takes_n_n(tmp_path: Path) -> None:
    """As BuildKit (issue 11, divergence 5): root is uid 0 with or without /etc/passwd, and a
    folder WORKDIR creates under a bare number no passwd entry names is owned N:N."""
    assert resolve_user(tmp_path, "root") == ResolvedUser(0, 0, (0,), "/")
    assert resolve_chown(tmp_path, "root") == (0, 0)
    assert workdir_owner(tmp_path, "root") == (0, 0)
    assert workdir_owner(tmp_path, "1234") == (1234, 1234)
    assert workdir_owner(tmp_path, "1234:5") == (1234, 5)
    assert resolve_user(tmp_path, "1234").gid == 0  # RUN's process: runc's default group


def test_workdir_owner_follows_a_passwd_entry(rootfs: Path) -> None:
    assert workdir_owner(rootfs, "1000") == (1000, 1000)  # app's own group from passwd
    assert workdir_owner(rootfs, "app") == (1000, 1000)


@pytest.mark.parametrize("spec", ["-1", "99999999999", "app:-5"])
def test_bad_numbers(rootfs: Path, spec: str) -> None:
    with pytest.raises(InvalidUserSpecError):
        resolve_user(rootfs, spec)


@pytest.mark.parametrize("spec,expected", [
    ("app", (1000, 1000)),
    ("svc", (1001, 50)),        # name alone: the user's primary group
    ("1001", (1001, 1001)),     # number alone: GID = UID
    ("4321", (4321, 4321)),
    ("app:staff", (1000, 50)),
    ("app:7", (1000, 7)),
    ("5:wheel", (5, 10)),
    ("0:0", (0, 0)),
])
def test_resolve_chown(rootfs: Path, spec: str, expected: tuple[int, int]) -> None:
    assert resolve_chown(rootfs, spec) == expected


@pytest.mark.parametrize("spec,expected", [
    ("ghost", (0, 0)),            # BuildKit: an unknown user is root, silently
    ("ghost:staff", (0, 50)),
    ("app:ghosts", (1000, 1000)),  # an unknown group keeps the user's primary group
    (":staff", (0, 50)),
    ("app:", (1000, 0)),           # an empty group is GID 0
    ("0x10", (0, 0)),              # not a number, so an (unknown) name
    ("svc", (1001, 50)),
    ("4321", (4321, 4321)),
])
def test_chown_like_buildkit_when_not_strict(rootfs: Path, spec: str,
                                             expected: tuple[int, int]) -> None:
    assert resolve_chown(rootfs, spec, strict=False) == expected


def test_chown_empty_group_is_gid_0_also_when_strict(rootfs: Path) -> None:
    assert resolve_chown(rootfs, "app:") == (1000, 0)


def test_chown_unknown_names(rootfs: Path) -> None:
    with pytest.raises(UnknownUserError, match="ghost"):
        resolve_chown(rootfs, "ghost")
    with pytest.raises(UnknownUserError, match="ghosts"):
        resolve_chown(rootfs, "app:ghosts")


def test_passwd_symlink_cannot_escape_the_rootfs(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "etc").mkdir(parents=True)
    (outside / "etc" / "passwd").write_text("evil:x:4242:4242::/:/bin/sh\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "passwd").write_text("good:x:7:7::/good:/bin/sh\n")
    # An absolute link and a ../ link both stay inside the root.
    (root / "etc" / "passwd").symlink_to(f"/../../{outside.name}/etc/passwd")
    with pytest.raises(UnknownUserError):
        resolve_user(root, "evil")
    os.unlink(root / "etc" / "passwd")
    (root / "etc" / "passwd").symlink_to("../../../data/passwd")
    assert resolve_user(root, "good") == ResolvedUser(7, 7, (7,), "/good")


def test_resolve_in_root(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "up").symlink_to("../../../..")
    (tmp_path / "a" / "abs").symlink_to("/a/b")
    (tmp_path / "loop").symlink_to("loop")
    assert resolve_in_root(tmp_path, "/a/up/etc") == tmp_path / "etc"
    assert resolve_in_root(tmp_path, "a/abs/new/file") == tmp_path / "a" / "b" / "new" / "file"
    assert resolve_in_root(tmp_path, "/a/abs", follow_last=False) == tmp_path / "a" / "abs"
    assert resolve_in_root(tmp_path, "/../../x") == tmp_path / "x"
    with pytest.raises(UnsafePathError):
        resolve_in_root(tmp_path, "/loop/x")
