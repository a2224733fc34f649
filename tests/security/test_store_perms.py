"""Issue 9, item 5: the store holds flattened images (setuid files, device nodes) and RUN cache
mounts; no other local user may traverse it, or they run a pulled image's setuid binary.

Checked as a real ordinary user (``cloche-test``, made with useradd when missing) through
``setpriv``: the store lives under a world-traversable directory, so only the store's own
modes stand between that user and the files.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloche.store import Store
from tests.engine.conftest import Builder
from tests.fixtures.services import require_root

USER = "cloche-test"
AREAS = ("snapshots", "cache", "builds", "tmp")


@pytest.fixture(scope="module")
def ordinary_user() -> tuple[int, int]:
    """(uid, gid) of an unprivileged local account."""
    require_root()
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        USER], check=True)
        entry = pwd.getpwnam(USER)
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user can traverse (pytest's tmp_path is 0700, which would hide the
    store whatever its own mode)."""
    path = Path(tempfile.mkdtemp(prefix="cloche-perms-", dir="/var/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_user(user: tuple[int, int], *argv: str) -> subprocess.CompletedProcess[str]:
    """``argv`` run by a shell that runs as ``user``: setpriv still holds root's capabilities
    when it calls execve (they go at that exec), so it must not exec the target itself."""
    uid, gid = user
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                           "--", "/bin/sh", "-c", 'exec "$@"', "sh", *argv],
                          capture_output=True, text=True, timeout=30)


def private(path: Path) -> bool:
    return os.stat(path).st_mode & 0o077 == 0


def test_new_store_is_private(public_dir: Path, ordinary_user: tuple[int, int]) -> None:
    root = public_dir / "store"
    Store.open(root)
    assert private(root), oct(os.stat(root).st_mode)
    for area in AREAS:
        assert private(root / area), area
    seen = as_user(ordinary_user, "ls", str(root / "blobs"))
    assert seen.returncode != 0 and "Permission denied" in seen.stderr, seen


def test_existing_store_is_tightened_on_open(public_dir: Path,
                                             ordinary_user: tuple[int, int]) -> None:
    root = public_dir / "store"
    Store.open(root)
    for path in (root, *(root / a for a in AREAS)):
        os.chmod(path, 0o755)  # a store made by an older cloche
    Store.open(root)
    assert private(root)
    for area in AREAS:
        assert private(root / area), area


def test_store_in_a_shared_folder_keeps_its_areas_private(public_dir: Path) -> None:
    """``--root`` naming a non-empty folder that is not a store: the folder's mode is the
    user's business, the areas holding trees are still private."""
    (public_dir / "notes.txt").write_text("mine")
    Store.open(public_dir)
    assert stat.S_IMODE(os.stat(public_dir).st_mode) == 0o755
    for area in AREAS:
        assert private(public_dir / area), area


def _setuid_files(root: Path) -> list[Path]:
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_mode & stat.S_ISUID:
                found.append(path)
    return found


def test_setuid_files_of_builds_are_out_of_reach(template_store: Path, public_dir: Path,
                                                 ordinary_user: tuple[int, int]) -> None:
    """A store of an older cloche (0755, copied from the template), then a build whose step
    and cache mount hold setuid-root copies of busybox: the ordinary user reaches neither."""
    require_root()
    root = public_dir / "store"
    shutil.copytree(template_store, root, symlinks=True)
    os.chmod(root, 0o755)
    builder = Builder(public_dir, root)
    builder.build("FROM busybox-test:1\n"
                  "RUN cp /bin/busybox /busybox-suid && chmod 4755 /busybox-suid\n"
                  "RUN --mount=type=cache,target=/cache cp /bin/busybox /cache/busybox-suid "
                  "&& chmod 4755 /cache/busybox-suid\n")
    planted = _setuid_files(root)
    assert any("mounts" in p.parts for p in planted), planted  # the cache mount's copy
    assert any(p.parent.name == "upper" for p in planted), planted  # the step's snapshot
    for path in planted:
        seen = as_user(ordinary_user, "stat", str(path))
        assert seen.returncode != 0 and "Permission denied" in seen.stderr, (path, seen)
        ran = as_user(ordinary_user, str(path), "id", "-u")
        assert ran.returncode != 0 and "Permission denied" in ran.stderr, (path, ran)
