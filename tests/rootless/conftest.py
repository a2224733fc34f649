"""An ordinary user to build as, and a way to run the ``cloche`` CLI as that user.

Set-up (as root, idempotent, so that reruns and parallel workers agree):
- the user ``cloche-rootless`` with a home and the ranges 100000-165535 in /etc/subuid and
  /etc/subgid (Debian's ``uidmap`` gives newuidmap/newgidmap); ``cloche-nosub`` without any;
- /dev/net/tun mode 0666 when it is 0600 (udev sets 0666 on most distributions; some minimal
  VMs, this one among them, leave 0600, and then no rootless engine has a network); /dev/fuse
  alike (fuse-overlayfs, the fallback overlay, opens it as the user);
- cloche's interpreter must be executable by the user: the project's venv points to a Python
  under /root here (mode 0700), so the test falls back to the system's Python of the same
  version with the venv's site-packages and src on PYTHONPATH (nothing is chmod-ed);
- a working directory under /tmp (0755; pytest's own tmp_path is 0700 root) that holds the
  contexts, a busybox rootfs and the user's store ($XDG_DATA_HOME/cloche).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import cloche
from cloche.rootless.idmap import SUBGID, SUBUID, ranges
from tests.fixtures.services import require_root, require_tool

USER = "cloche-rootless"
NOSUB = "cloche-nosub"
RANGE = "100000-165535"
SRC = str(Path(cloche.__file__).resolve().parents[1])
TUN = "/dev/net/tun"
FUSE_DEV = "/dev/fuse"


@dataclass
class AsUser:
    """Runs ``cloche`` as ``user`` with ``data`` as $XDG_DATA_HOME (its store below)."""

    user: str
    uid: int
    home: Path
    data: Path
    argv: list[str]
    env: dict[str, str]

    @property
    def store(self) -> Path:
        return self.data / "cloche"

    def run(self, *args: str, check: bool = True, timeout: float = 300,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(self.env, **(extra_env or {}))
        cmd = ["runuser", "-u", self.user, "--", "env", "-i",
               *(f"{k}={v}" for k, v in env.items()), *self.argv, *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/")
        if check and done.returncode != 0:
            raise AssertionError(f"cloche {' '.join(args)} as {self.user} exited "
                                 f"{done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done


def _useradd(name: str, *extra: str) -> None:
    if subprocess.run(["id", "-u", name], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", *extra, name],
                       check=True, capture_output=True)


def _home(name: str) -> Path:
    import pwd

    return Path(pwd.getpwnam(name).pw_dir)


def _uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


def _can_run(user: str, path: str) -> bool:
    return subprocess.run(["runuser", "-u", user, "--", "test", "-x", path],
                          capture_output=True).returncode == 0


def _can_read(user: str, path: str) -> bool:
    return subprocess.run(["runuser", "-u", user, "--", "test", "-r", path, "-a", "-x", path],
                          capture_output=True).returncode == 0


def _readable_copies(paths: list[str]) -> list[str]:
    """Copies of the import paths where every user can read them (made once per session)."""
    base = Path(tempfile.gettempdir()) / f"cloche-rootless-py-{os.getpid()}"
    copies = []
    for i, path in enumerate(dict.fromkeys(paths)):
        dest = base / str(i)
        if not dest.exists():
            shutil.copytree(path, dest, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        copies.append(str(dest))
    for folder, _dirs, files in os.walk(base):
        os.chmod(folder, 0o755)
        for name in files:
            target = os.path.join(folder, name)
            if not os.path.islink(target):
                os.chmod(target, os.stat(target).st_mode | 0o444)
    return copies


def _interpreter(user: str) -> tuple[list[str], dict[str, str]]:
    """How ``user`` runs this cloche: the venv's Python when the user may execute it, else
    the system's Python of the same version with the venv's packages on PYTHONPATH."""
    here = os.path.realpath(sys.executable)
    paths = [SRC, sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    if not all(_can_read(user, p) for p in paths):
        paths = _readable_copies(paths)  # a checkout below a private folder (CI's may be)
    pythonpath = ":".join(dict.fromkeys(paths))
    if _can_run(user, here) and _can_run(user, sys.executable):
        return [sys.executable, "-m", "cloche.cli.main"], {"PYTHONPATH": pythonpath}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if os.path.exists(candidate) and _can_run(user, candidate):
            return [candidate, "-m", "cloche.cli.main"], {"PYTHONPATH": pythonpath}
    pytest.fail(f"{USER} cannot execute {here} (a parent directory is not traversable) and "
                f"there is no /usr/bin/{version}: install cloche where users can run it")


@pytest.fixture(scope="session")
def rootless_host() -> None:
    """The host-wide set-up (module docstring); needs root, as CI is."""
    require_root()
    require_tool("runuser", "util-linux")
    require_tool("useradd", "passwd")
    require_tool("newuidmap", "apt-get install uidmap")
    _useradd(USER)
    if not ranges(SUBUID, USER, _uid(USER)) or not ranges(SUBGID, USER, _uid(USER)):
        subprocess.run(["usermod", "--add-subuids", RANGE, "--add-subgids", RANGE, USER],
                       check=True, capture_output=True)
    _useradd(NOSUB, "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0")
    for path, flag in ((SUBUID, "--del-subuids"), (SUBGID, "--del-subgids")):
        for start, count in ranges(path, NOSUB, _uid(NOSUB)):
            subprocess.run(["usermod", flag, f"{start}-{start + count - 1}", NOSUB],
                           check=True, capture_output=True)
    for dev in (TUN, FUSE_DEV):
        if os.path.exists(dev) and stat.S_IMODE(os.stat(dev).st_mode) != 0o666:
            os.chmod(dev, 0o666)


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """A directory every user can traverse (pytest's tmp_path is root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="cloche-rootless-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)  # as root: the subordinate ids' files too


def as_user(name: str, work: Path) -> AsUser:
    data = work / f"data-{name}"
    data.mkdir(exist_ok=True)
    os.chown(data, _uid(name), -1)
    argv, env = _interpreter(name)
    home = _home(name)
    env.update({"HOME": str(home), "XDG_DATA_HOME": str(data), "USER": name,
                "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"})
    return AsUser(name, _uid(name), home, data, argv, env)


@pytest.fixture(scope="session")
def user(rootless_host: None, workdir: Path) -> AsUser:
    return as_user(USER, workdir)


@pytest.fixture(scope="session")
def nosub(rootless_host: None, workdir: Path) -> AsUser:
    return as_user(NOSUB, workdir)
