"""Property: whatever links a destination rootfs holds, COPY writes nothing outside it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloche.engine.copy import CopyRequest, copy_into
from cloche.engine.sources import SourceTree
from cloche.errors import ClocheError

_component = st.sampled_from(["..", ".", "a", "b", "out", ""])
_path = st.lists(_component, min_size=1, max_size=4).map("/".join)
_link = st.tuples(st.sampled_from(["a", "b", "a/b", "b/a"]),
                  st.one_of(_path.filter(bool), _path.map(lambda p: "/" + p), st.just("/"),
                            st.just("../../..")))


def _snapshot(top: Path, skip: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            continue
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            out[str(path)] = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_link, max_size=4), _path, st.booleans())
def test_copy_never_writes_outside_root(links: list[tuple[str, str]], dest: str,
                                        trailing: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        ctx = sandbox / "ctx"
        (ctx / "dir" / "sub").mkdir(parents=True)
        (ctx / "file").write_text("f")
        (ctx / "dir" / "sub" / "x").write_text("x")
        (sandbox / "out").mkdir()
        (sandbox / "out" / "a").write_text("keep")
        root = sandbox / "root"
        root.mkdir()
        for where, target in links:
            path = root / where
            if path.parent.is_dir() and not os.path.lexists(path) and not path.parent.is_symlink():
                path.symlink_to(target)
        before = _snapshot(sandbox, root)
        tree = SourceTree(ctx)
        for source in ("file", "dir"):
            try:
                copy_into(CopyRequest((source,), dest + ("/" if trailing else "")), tree, root)
            except ClocheError:
                pass
        assert _snapshot(sandbox, root) == before
