"""Test helpers for layers: a comparable snapshot of a directory tree, and crafted tars."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

from cloche.errors import LayerError
from cloche.layers.apply import apply_layer
from cloche.layers.tree import read_xattrs


def snapshot(root: Path, *, times: bool = True) -> dict[str, tuple]:
    """Every path under ``root`` with its type, mode, owner, content hash or link target,
    device numbers, xattrs, mtime (seconds), and hard-link grouping."""
    result: dict[str, tuple] = {}
    inodes: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                detail: object = hashlib.sha256(Path(full).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                detail = os.readlink(full)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                detail = (os.major(st.st_rdev), os.minor(st.st_rdev))
            else:
                detail = None
            link_group = None
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                link_group = inodes.setdefault((st.st_dev, st.st_ino), rel)
            mtime = int(st.st_mtime) if times else None
            result[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, detail,
                           read_xattrs(full), mtime, link_group)
    return result


def make_tar(members: list[tuple[tarfile.TarInfo, bytes | None]], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar built by the standard library from (header, content) pairs, for crafted input."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return buf.getvalue()


def info(name: str, kind: bytes = tarfile.REGTYPE, *, linkname: str = "",
         mode: int = 0o644) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = linkname
    ti.mode = mode
    ti.mtime = 1_700_000_000
    return ti


def file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    return info(name, mode=mode), data


def directory(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, None]:
    return info(name, tarfile.DIRTYPE, mode=mode), None


def symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    return info(name, tarfile.SYMTYPE, linkname=target, mode=0o777), None


def hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    return info(name, tarfile.LNKTYPE, linkname=target), None


def tree_files(root: Path) -> set[str]:
    """All paths under ``root`` (for 'nothing was written here' checks)."""
    return {os.path.relpath(os.path.join(d, n), root)
            for d, ds, fs in os.walk(root) for n in ds + fs}


def apply_as_nobody(blob: Path, dest: Path, devices: str = "error") -> tuple[int, str]:
    """Apply in a forked child that dropped to uid/gid 65534; (exit code, error text)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(read)
            f = open(blob, "rb")  # opened and entered while still root: tmp_path is 0700
            os.chdir(dest)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with f:
                apply_layer(f, ".", devices=devices)
        except LayerError as e:
            os.write(write, str(e).encode())
            code = 3
        except BaseException as e:  # noqa: BLE001
            os.write(write, repr(e).encode())
            code = 4
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as r:
        message = r.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), message
