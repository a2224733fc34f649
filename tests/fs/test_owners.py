"""cloche.fs.owners: owners set as root, recorded in an xattr by a user who cannot chown.

The user's side runs in a forked child that drops to uid/gid 1000 (no capability left), in a
directory it owns, on the real file system: what the kernel allows a user (user xattrs on
files and directories only, subject to the file's mode; no chown; S_ISGID kept for its own
group) is what is tested.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloche.fs import owners
from cloche.fs.extract import Extractor
from cloche.layers.reader import LayerReader
from tests.fixtures.services import require_root

UID = GID = 1000


@pytest.fixture
def user_dir() -> Iterator[Path]:
    require_root()
    top = Path(tempfile.mkdtemp(prefix="cloche-owners-", dir="/var/tmp"))
    top.chmod(0o755)
    os.chown(top, UID, GID)
    try:
        yield top
    finally:
        owners.set_recording(False)
        shutil.rmtree(top, ignore_errors=True)


def _as_user(body: Callable[[], None]) -> None:
    """Run ``body`` in a forked child as uid/gid 1000 with owners recorded; re-raise its
    failure here."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            os.setgroups([])
            os.setresgid(GID, GID, GID)
            os.setresuid(UID, UID, UID)
            owners.set_recording(True)
            body()
        except BaseException:  # noqa: BLE001 - reported to the parent
            os.write(w, traceback.format_exc().encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        report = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, report


def test_root_sets_and_reads_real_owners(tmp_path: Path) -> None:
    require_root()
    owners.set_recording(False)
    f = tmp_path / "f"
    f.write_text("x")
    owners.set_owner(f, 5, 6)
    st = os.lstat(f)
    assert (st.st_uid, st.st_gid) == (5, 6)
    assert owners.owner_of(f, st) == (5, 6)
    assert owners.OWNER_XATTR not in os.listxattr(f)  # chowned, nothing recorded


def test_user_records_owners(user_dir: Path) -> None:
    def body() -> None:
        f = user_dir / "f"
        f.write_text("x")
        assert owners.owner_of(f, os.lstat(f)) == (0, 0)  # the caller's own: root's
        owners.set_owner(f, 5, 6)
        st = os.lstat(f)
        assert (st.st_uid, st.st_gid) == (UID, GID)  # not chowned: recorded
        assert owners.owner_of(f, st) == (5, 6)
        assert owners.recorded_owner(f, st) == (5, 6)
        # modes without the owner's read or write bit: the record is still read and written,
        # and the mode is what it was
        f.chmod(0o000)
        assert owners.owner_of(f, os.lstat(f)) == (5, 6)
        owners.set_owner(f, 7, 8)
        assert stat.S_IMODE(os.lstat(f).st_mode) == 0
        assert owners.owner_of(f, os.lstat(f)) == (7, 8)
        g = user_dir / "g"
        g.write_text("y")
        g.chmod(0o000)
        assert owners.owner_of(g, os.lstat(g)) == (0, 0)  # nothing recorded, mode unchanged
        assert stat.S_IMODE(os.lstat(g).st_mode) == 0
        # a directory, and a descriptor
        d = user_dir / "d"
        d.mkdir(mode=0o555)
        owners.set_owner(d, 65534, 65534)
        assert owners.owner_of(d, os.lstat(d)) == (65534, 65534)
        fd = os.open(user_dir / "h", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            owners.set_owner(fd, 1, 2)
        finally:
            os.close(fd)
        assert owners.owner_of(user_dir / "h", os.lstat(user_dir / "h")) == (1, 2)
        # a symlink takes no user xattr: no error, and it reads as root's
        link = user_dir / "link"
        link.symlink_to("f")
        owners.set_owner(link, 3, 3)
        assert owners.owner_of(link, os.lstat(link)) == (0, 0)
        # a record that is not UID:GID counts as none
        os.setxattr(user_dir / "h", owners.OWNER_XATTR, b"1:x")
        assert owners.owner_of(user_dir / "h", os.lstat(user_dir / "h")) == (0, 0)
        # setgid on the user's own file (its group is the user's): kept by the kernel
        os.chmod(f, 0o2755)
        assert stat.S_IMODE(os.lstat(f).st_mode) == 0o2755

    _as_user(body)


def _layer() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, kind: bytes, *, uid: int = 0, gid: int = 0, mode: int = 0o644,
                data: bytes = b"", pax: dict[str, str] | None = None,
                link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.uid, info.gid, info.mode, info.size = kind, uid, gid, mode, len(data)
            info.linkname = link
            info.pax_headers = pax or {}
            if kind == tarfile.CHRTYPE:
                info.devmajor, info.devminor = 1, 3
            tar.addfile(info, io.BytesIO(data) if data else None)

        add("etc", tarfile.DIRTYPE, mode=0o755)
        add("etc/shadow", tarfile.REGTYPE, uid=0, gid=42, mode=0o000, data=b"secret\n")
        add("home", tarfile.DIRTYPE, uid=1000, gid=1000, mode=0o750)
        add("home/forged", tarfile.REGTYPE, uid=1000, gid=1000, data=b"x",
            pax={"SCHILY.xattr.user.cloche.owner": "0:0"})
        add("home/link", tarfile.SYMTYPE, uid=1000, gid=1000, link="forged")
        add("dev", tarfile.DIRTYPE, mode=0o755)
        add("dev/null", tarfile.CHRTYPE, mode=0o666)
    return buf.getvalue()


def test_user_extracts_a_layer_with_recorded_owners(user_dir: Path) -> None:
    """A base layer unpacked by a user: owners recorded, the tar's own record never applied,
    devices left out."""
    layer = _layer()

    def body() -> None:
        dest = user_dir / "rootfs"
        Extractor(dest).extract(LayerReader(io.BytesIO(layer)))

        def owner(rel: str) -> tuple[int, int]:
            return owners.owner_of(dest / rel, os.lstat(dest / rel))

        assert owner("etc/shadow") == (0, 42)
        assert stat.S_IMODE(os.lstat(dest / "etc/shadow").st_mode) == 0
        assert owner("home") == (1000, 1000) and owner("home/forged") == (1000, 1000)
        assert owner("home/link") == (0, 0)
        assert not os.path.lexists(dest / "dev/null")

    _as_user(body)
