"""layers/unchanged.py: what BuildKit's overlay differ leaves out of a step's layer."""

from __future__ import annotations

import os
from pathlib import Path

from cloche.compression import Compression
from cloche.layers.diff import write_overlay_diff
from cloche.layers.unchanged import LowerView, Unchanged, find_unchanged


class _Sink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


def _names(upper: Path, unchanged: Unchanged | None) -> list[str]:
    import io
    import tarfile
    sink = _Sink()
    write_overlay_diff(upper, sink, Compression.NONE, unchanged=unchanged)
    with tarfile.open(fileobj=io.BytesIO(sink.data)) as tar:
        return [m.name for m in tar]


def _file(path: Path, data: bytes, mtime: int = 1_600_000_000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def test_same_entries_are_left_out_and_parents_kept_only_above_a_change(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    _file(lower / "etc/passwd", b"root\n")
    _file(lower / "etc/group", b"root\n")
    _file(lower / "var/lib/x", b"x")
    _file(upper / "etc/passwd", b"root\n")  # copied up, same bytes and time
    _file(upper / "etc/group", b"ROOT\n")  # same size and time, new bytes
    _file(upper / "var/lib/x", b"x")  # same: var and var/lib only parents of nothing
    (upper / "new").mkdir()
    os.mknod(upper / "new/gone", 0o600 | 0o020000, 0)  # whiteout of what no lower holds
    os.mknod(upper / "etc/old", 0o600 | 0o020000, 0)  # whiteout of nothing either
    _file(lower / "etc/shadow", b"s")
    os.mknod(upper / "etc/shadow", 0o600 | 0o020000, 0)  # a real deletion
    for d in ("etc", "var", "var/lib"):
        os.chmod(lower / d, 0o755)
        os.chmod(upper / d, 0o755)
    unchanged = find_unchanged(upper, [lower])
    assert unchanged.skip == {"etc/passwd", "var/lib/x", "new/gone", "etc/old"}
    assert unchanged.parents_only == {"etc", "var", "var/lib"}
    assert _names(upper, unchanged) == ["etc", "etc/group", "etc/.wh.shadow", "new"]
    assert Unchanged.from_json(unchanged.to_json()) == unchanged  # kept for the lazy path
    assert _names(upper, None) != _names(upper, unchanged)


def test_a_changed_mode_or_time_is_a_change(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    _file(lower / "a", b"1")
    _file(upper / "a", b"1", mtime=1_600_000_001)
    _file(lower / "b", b"1")
    _file(upper / "b", b"1")
    os.chmod(upper / "b", 0o600)
    os.chmod(lower / "b", 0o644)
    assert find_unchanged(upper, [lower]).skip == frozenset()


def test_lookup_follows_overlay_rules_and_never_a_symlink(tmp_path: Path) -> None:
    top, bottom = tmp_path / "top", tmp_path / "bottom"
    _file(bottom / "d/f", b"1")
    _file(bottom / "hidden/f", b"1")
    _file(bottom / "opq/f", b"1")
    top.mkdir()
    os.mknod(top / "hidden", 0o600 | 0o020000, 0)  # whiteout of the whole folder
    (top / "opq").mkdir()
    os.setxattr(top / "opq", "trusted.overlay.opaque", b"y")
    (tmp_path / "outside").mkdir()
    _file(tmp_path / "outside/f", b"secret")
    os.symlink(tmp_path / "outside", top / "link")
    view = LowerView([top, bottom])
    found = view.lookup("d/f")
    assert found is not None and not isinstance(found, type(view.lookup)) \
        and found[0] == str(bottom / "d/f")  # type: ignore[index]
    assert view.lookup("hidden/f") is None
    assert view.lookup("opq/f") is None
    assert view.lookup("link/f") is None  # a symlink is not walked into


def _tree(root: Path) -> dict[str, str]:
    """Every path below root: a file's bytes, ``dir`` or ``link -> target``."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link -> " + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = path.read_text()
    return out


def _applied(tmp_path: Path, lower: Path, upper: Path, unchanged: Unchanged) -> dict[str, str]:
    """The tree the lower, then the upper's layer, give when applied as image layers."""
    import io

    from cloche.layers import flatten, write_tree
    base, diff = _Sink(), _Sink()
    write_tree(lower, base, Compression.NONE)
    write_overlay_diff(upper, diff, Compression.NONE, unchanged=unchanged)
    dest = tmp_path / "applied"
    flatten([io.BytesIO(base.data), io.BytesIO(diff.data)], dest)
    return _tree(dest)


def _opaque(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.setxattr(path, "trusted.overlay.opaque", b"y")


def test_a_directory_made_again_gets_a_whiteout_per_removed_entry(tmp_path: Path) -> None:
    """BuildKit's differ (checkOpaque): an opaque upper directory the lowers hold is compared
    with the lower one: no opaque marker, a whiteout for each lower entry it lacks, what is
    the same left out; the same inside its subdirectories (overlayfs hides their lower
    entries too). The upper directory itself is not changed."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    _file(lower / "d/same", b"s")
    _file(lower / "d/old", b"o")
    _file(lower / "d/sub/keep", b"k")
    _file(lower / "d/sub/drop", b"x")
    _file(lower / "d/gone/deep/f", b"f")
    _file(lower / "other", b"1")
    _opaque(upper / "d")
    _file(upper / "d/same", b"s")  # made again with the same bytes and time
    _file(upper / "d/new", b"n")
    _file(upper / "d/sub/keep", b"k")  # sub is plain in the upper: its parent hides the lower
    for d in ("d", "d/sub"):
        os.chmod(lower / d, 0o755)
        os.chmod(upper / d, 0o755)
    unchanged = find_unchanged(upper, [lower])
    assert unchanged.whiteouts == {"d/old", "d/gone", "d/sub/drop"}
    assert unchanged.not_opaque == {"d"} and unchanged.opaque == frozenset()
    assert _names(upper, unchanged) == ["d", "d/.wh.gone", "d/.wh.old", "d/new", "d/sub",
                                        "d/sub/.wh.drop"]
    assert Unchanged.from_json(unchanged.to_json()) == unchanged  # the lazy layer's list
    assert os.getxattr(upper / "d", "trusted.overlay.opaque") == b"y"  # the snapshot as it was
    expected = {"d": "dir", "d/new": "n", "d/same": "s", "d/sub": "dir", "d/sub/keep": "k",
                "other": "1"}
    assert _applied(tmp_path, lower, upper, unchanged) == expected
    opaque_layer = _applied(tmp_path / "old", lower, upper, Unchanged())  # as written before
    assert opaque_layer == expected


def test_a_directory_made_again_too_deep_to_compare_stays_opaque(tmp_path: Path) -> None:
    """Below the walk's depth limit nothing is compared: a directory there that hides a lower
    one is written whole with an opaque marker, which gives the same tree."""
    from cloche.layers.unchanged import MAX_DEPTH
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    chain = "/".join(["x"] * (MAX_DEPTH + 4))
    _file(lower / "d" / chain / "old", b"o")
    _file(lower / "d/top-old", b"t")
    _opaque(upper / "d")
    _file(upper / "d" / chain / "new", b"n")
    unchanged = find_unchanged(upper, [lower])
    assert unchanged.whiteouts == {"d/top-old"}
    deepest = "d/" + "/".join(["x"] * (MAX_DEPTH - 1))
    assert unchanged.opaque == {deepest}
    assert f"{deepest}/.wh..wh..opq" in _names(upper, unchanged)
    applied = _applied(tmp_path, lower, upper, unchanged)
    assert applied[f"d/{chain}/new"] == "n"
    assert f"d/{chain}/old" not in applied and "d/top-old" not in applied
