"""cloche.fs.extract: the switches that separate ADD's extraction from a layer's, on one
extractor (the shared rules are covered by tests/layers and tests/engine/test_add*)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from cloche.errors import UnsafePathError
from cloche.fs.extract import ExtractError, Extractor
from cloche.layers.reader import LayerReader


def _tar(*members: tuple[str, str, str | bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_500_000_000
            info.uid, info.gid = 1000, 1001
            if kind == "file":
                data = value if isinstance(value, bytes) else value.encode()
                info.size, info.mode = len(data), 0o640
                tf.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                         "link": tarfile.LNKTYPE}[kind]
            info.mode = 0o750 if kind == "dir" else 0o644
            info.linkname = str(value)
            tf.addfile(info)
    return out.getvalue()


def _extract(dest: Path, data: bytes, **options: object) -> Extractor:
    extractor = Extractor(dest, **options)  # type: ignore[arg-type]
    extractor.extract(LayerReader(io.BytesIO(data)))
    return extractor


def test_whiteouts_only_when_asked(tmp_path: Path) -> None:
    for whiteouts in (True, False):
        dest = tmp_path / str(whiteouts)
        dest.mkdir()
        (dest / "old").write_text("lower")
        _extract(dest, _tar((".wh.old", "file", "")), whiteouts=whiteouts)
        assert (dest / "old").exists() is not whiteouts
        assert (dest / ".wh.old").exists() is not whiteouts  # ADD: a .wh. file is a file


def test_climbing_symlinks_are_refused_only_when_confined(tmp_path: Path) -> None:
    data = _tar(("a", "dir", ""), ("a/up", "sym", "../../outside"), ("a/abs", "sym", "/etc"))
    _extract(tmp_path / "layer", data)
    assert os.readlink(tmp_path / "layer" / "a" / "up") == "../../outside"
    with pytest.raises(UnsafePathError, match="outside of the extraction directory"):
        _extract(tmp_path / "add", data, confine_symlinks=True)
    ok = _tar(("a", "dir", ""), ("a/abs", "sym", "/etc"), ("a/side", "sym", "../a"))
    _extract(tmp_path / "add2", ok, confine_symlinks=True)  # absolute targets stay inside
    assert os.readlink(tmp_path / "add2" / "a" / "abs") == "/etc"


def test_the_root_entry_changes_dest_only_when_asked(tmp_path: Path) -> None:
    for root_metadata in (True, False):
        dest = tmp_path / str(root_metadata)
        dest.mkdir(mode=0o711)
        os.chmod(dest, 0o711)
        _extract(dest, _tar(("./", "dir", ""), ("f", "file", "x")), root_metadata=root_metadata)
        assert stat.S_IMODE(dest.stat().st_mode) == (0o750 if root_metadata else 0o711)


def test_owner_override_and_hard_link_header(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    data = _tar(("f", "file", "data"), ("h", "link", "f"))
    ex = _extract(tmp_path, data, owner=(7, 8))
    st = (tmp_path / "f").stat()
    assert (st.st_uid, st.st_gid) == (7, 8)
    assert (tmp_path / "h").stat().st_ino == st.st_ino
    assert stat.S_IMODE(st.st_mode) == 0o644  # the link entry's header, applied to the inode
    assert ex.bytes == 4


def test_a_hard_link_to_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ExtractError, match="target not found"):
        _extract(tmp_path, _tar(("h", "link", "missing")))
