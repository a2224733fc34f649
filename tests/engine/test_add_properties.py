"""Property: whatever a tar holds, extraction writes nothing outside its destination."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloche.engine.extract import ArchiveError, extract_tar
from cloche.errors import UnsafePathError

_component = st.sampled_from(["..", ".", "a", "b", "etc", ""])
_path = st.lists(_component, min_size=1, max_size=5).map("/".join)
_entry = st.tuples(st.sampled_from(["file", "dir", "symlink", "hardlink"]), _path,
                   st.one_of(_path, _path.map(lambda p: "/" + p)))


def _tar(entries: list[tuple[str, str, str]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, target in entries:
            info = tarfile.TarInfo(name or ".")
            if kind == "file":
                info.size = 1
                tf.addfile(info, io.BytesIO(b"x"))
                continue
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, target
            else:
                info.type, info.linkname = tarfile.LNKTYPE, target.lstrip("/") or "a"
            tf.addfile(info)
    return buf.getvalue()


def _snapshot(top: Path, skip: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(top):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            continue
        for name in dirnames + filenames:
            out.add(os.path.join(dirpath, name))
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_entry, min_size=1, max_size=6))
def test_nothing_escapes(entries: list[tuple[str, str, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        (sandbox / "outside").mkdir()
        (sandbox / "outside" / "a").write_text("keep")
        dest = sandbox / "inside" / "dest"
        dest.mkdir(parents=True)
        before = _snapshot(sandbox, dest)
        try:
            extract_tar(io.BytesIO(_tar(entries)), dest, label="prop")
        except (UnsafePathError, ArchiveError):
            pass
        assert _snapshot(sandbox, dest) == before
        assert (sandbox / "outside" / "a").read_text() == "keep"
        for dirpath, dirnames, filenames in os.walk(dest):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                if not path.is_symlink():
                    assert dest.resolve() in path.resolve().parents
