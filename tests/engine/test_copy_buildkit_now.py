"""COPY and ADD as current BuildKit does them where the Docker engine's v0.8 differs (issue 11).

Read in moby/buildkit v0.23 (and its vendored tonistiigi/fsutil copy package); the Docker
engine's BuildKit v0.8 cannot show these, so they are checked here against the source's rules
rather than by a parity build.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from cloche.engine.add import add_into
from cloche.engine.context import context_from_directory
from cloche.engine.copy import CopyDestinationError, CopyRequest, copy_into
from cloche.engine.sources import SourceNotFoundError


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture()
def ctx(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "d" / "sub").mkdir(parents=True)
    (ctx / "d" / "a").write_text("a")
    (ctx / "d" / "sub" / "b").write_text("b")
    (ctx / "f").write_text("f")
    for p in (ctx / "d", ctx / "d" / "sub"):
        os.chmod(p, 0o755)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("in-tar")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"t"))
    (ctx / "t.tar").write_bytes(buf.getvalue())
    return ctx


def _copy(ctx: Path, root: Path, request: CopyRequest, *, unpack: bool = False) -> None:
    root.mkdir(exist_ok=True)
    copy_into(request, context_from_directory(ctx).tree, root, unpack=unpack)


# -- divergence 2: --chmod also sets the mode of the directories the copy creates ---------------
# fsutil copy.Copy makes the destination's missing parents, and prepareTargetDir a directory
# source's missing destination, with MkdirAll(path, *ci.Mode): the octal --chmod (v0.8: 0755).


def test_octal_chmod_applies_to_the_created_destination_and_its_parents(ctx: Path,
                                                                       tmp_path: Path) -> None:
    root = tmp_path / "root"
    _copy(ctx, root, CopyRequest(("d",), "/a/dest", chmod="750"))
    assert _mode(root / "a") == 0o750
    assert _mode(root / "a" / "dest") == 0o750
    assert _mode(root / "a" / "dest" / "a") == 0o750
    assert _mode(root / "a" / "dest" / "sub") == 0o750


def test_add_octal_chmod_applies_to_the_created_destination(ctx: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _copy(ctx, root, CopyRequest(("d",), "/add/", chmod="777", instruction="ADD"), unpack=True)
    assert _mode(root / "add") == 0o777
    assert _mode(root / "add" / "sub") == 0o777
    assert _mode(root / "add" / "sub" / "b") == 0o777


def test_octal_chmod_applies_to_the_parents_made_for_a_file(ctx: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _copy(ctx, root, CopyRequest(("f",), "/x/y/f", chmod="640"))
    assert (_mode(root / "x"), _mode(root / "x" / "y"), _mode(root / "x" / "y" / "f")) == (
        0o640, 0o640, 0o640)


def test_existing_directories_keep_their_mode(ctx: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    os.chmod(root / "a", 0o711)
    _copy(ctx, root, CopyRequest(("d",), "/a/", chmod="700"))
    assert _mode(root / "a") == 0o711
    assert _mode(root / "a" / "sub") == 0o700


def test_set_id_bits_of_an_octal_chmod_are_not_given_to_created_directories(
        ctx: Path, tmp_path: Path) -> None:
    """Go's os.FileMode(04750) has no setuid flag (Go keeps it in a high bit), so MkdirAll
    sets 0750."""
    root = tmp_path / "root"
    _copy(ctx, root, CopyRequest(("f",), "/s/f", chmod="4750"))
    assert _mode(root / "s") == 0o750


def test_symbolic_chmod_leaves_created_directories_0755(ctx: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _copy(ctx, root, CopyRequest(("d",), "/sym/dest", chmod="go-rx"))
    assert _mode(root / "sym") == 0o755
    assert _mode(root / "sym" / "dest") == 0o755
    assert _mode(root / "sym" / "dest" / "sub") == 0o700


def test_add_unpacking_a_tar_makes_its_destination_0755(ctx: Path, tmp_path: Path) -> None:
    """BuildKit's unpack (solver/llbsolver/file/unpack.go) makes the destination 0755."""
    root = tmp_path / "root"
    _copy(ctx, root, CopyRequest(("t.tar",), "/u/", chmod="700", instruction="ADD"), unpack=True)
    assert _mode(root / "u") == 0o755
    assert (root / "u" / "in-tar").read_text() == "t"


# -- divergence 4: sources are counted after wildcard expansion ---------------------------------
# dockerfile2llb copies each source on its own with AllowWildcard and AllowEmptyWildcard, so
# a wildcard that matches nothing adds nothing (Docker parity: tests/differential/cases/
# copy_empty_wildcard).


def test_a_wildcard_matching_nothing_is_not_a_source(ctx: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _copy(ctx, root, CopyRequest(("nomatch*", "f"), "/dest"))
    assert (root / "dest").read_text() == "f"


def test_add_counts_sources_after_expansion_too(ctx: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    add_into(CopyRequest(("nomatch*", "f"), "/dest", instruction="ADD"),
             context_from_directory(ctx).tree, root)
    assert (root / "dest").read_text() == "f"


def test_no_match_at_all_copies_nothing(ctx: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _copy(ctx, root, CopyRequest(("nomatch*", "other*"), "/none"))
    assert os.listdir(root) == []


def test_two_sources_that_match_still_need_a_directory(ctx: Path, tmp_path: Path) -> None:
    """cloche keeps the legacy builder's error when two sources are left (a deliberate
    difference: BuildKit copies them onto the same path in turn, the last one winning)."""
    root = tmp_path / "root"
    with pytest.raises(CopyDestinationError, match="must be a directory"):
        _copy(ctx, root, CopyRequest(("nomatch*", "f", "t.tar"), "/dest"))
    assert os.listdir(root) == []


def test_a_missing_plain_source_is_still_an_error(ctx: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    with pytest.raises(SourceNotFoundError):
        _copy(ctx, root, CopyRequest(("missing", "f"), "/dest/"))
