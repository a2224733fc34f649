"""Hostile layers: nothing is ever written outside the destination, errors name the entry.

Each test applies a crafted tar to DEST next to a SENTINEL directory holding a file, and
checks that SENTINEL is exactly as it was (and that the host's /etc/passwd was not linked).
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from cloche.errors import LayerError, UnsafePathError
from cloche.layers import apply_layer, flatten
from tests.fixtures.services import require_root
from tests.layers.helpers import (
    apply_as_nobody,
    directory,
    file,
    hardlink,
    info,
    make_tar,
    symlink,
    tree_files,
)


@pytest.fixture
def dest_and_sentinel(tmp_path: Path):
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep").write_text("precious")
    dest = tmp_path / "dest"
    dest.mkdir()
    before = (tree_files(sentinel), (sentinel / "keep").read_text())
    passwd_links = os.stat("/etc/passwd").st_nlink
    yield dest, sentinel
    assert (tree_files(sentinel), (sentinel / "keep").read_text()) == before
    assert os.stat("/etc/passwd").st_nlink == passwd_links


def apply(dest: Path, *members) -> None:
    apply_layer(io.BytesIO(make_tar(list(members))), dest)


@pytest.mark.parametrize("name", ["../sentinel/pwned", "a/../../sentinel/pwned", "..",
                                  "./../sentinel/keep"])
def test_dotdot_names_are_refused(dest_and_sentinel, name: str) -> None:
    dest, _ = dest_and_sentinel
    with pytest.raises(UnsafePathError, match=r"climbs out") as err:
        apply(dest, file(name, b"evil"))
    assert name in str(err.value)


def test_absolute_names_are_confined(dest_and_sentinel) -> None:
    dest, sentinel = dest_and_sentinel
    apply(dest, file(str(sentinel / "keep"), b"evil"), file("/etc/evil-marker", b"evil"))
    assert (dest / str(sentinel).lstrip("/") / "keep").read_bytes() == b"evil"
    assert (dest / "etc" / "evil-marker").exists() and not Path("/etc/evil-marker").exists()


@pytest.mark.parametrize("target", ["SENTINEL", "../sentinel", "../../../../../../../SENTINEL"])
def test_file_written_through_a_symlink_pointing_out_stays_inside(dest_and_sentinel, target: str) -> None:
    dest, sentinel = dest_and_sentinel
    target = target.replace("SENTINEL", str(sentinel).lstrip("/"))
    if target.startswith(str(sentinel).lstrip("/")):
        target = "/" + target
    apply(dest, symlink("escape", target), file("escape/keep", b"evil"),
          file("escape/new", b"evil"))
    # the link is resolved as if DEST were '/': what was written is under DEST
    written = [p for p in tree_files(dest) if p.endswith("/keep")]
    assert len(written) == 1 and (dest / written[0]).read_bytes() == b"evil"


def test_symlink_in_a_lower_layer_then_file_through_it(dest_and_sentinel) -> None:
    dest, sentinel = dest_and_sentinel
    flatten([io.BytesIO(make_tar([symlink("etc", str(sentinel))])),
             io.BytesIO(make_tar([file("etc/keep", b"evil"), directory("etc/sub"),
                                  file("etc/sub/f", b"evil")]))], dest)
    assert (dest / str(sentinel).lstrip("/") / "sub" / "f").exists()


def test_final_component_symlink_is_replaced_not_followed(dest_and_sentinel) -> None:
    dest, sentinel = dest_and_sentinel
    apply(dest, symlink("keep", str(sentinel / "keep")), file("keep", b"evil"))
    assert (dest / "keep").read_bytes() == b"evil" and not (dest / "keep").is_symlink()
    apply(dest, symlink("d", str(sentinel)), directory("d"))
    assert (dest / "d").is_dir() and not (dest / "d").is_symlink()


def test_hard_link_to_host_passwd_is_confined(dest_and_sentinel) -> None:
    dest, _ = dest_and_sentinel
    with pytest.raises(LayerError, match=r"hard link 'pw' -> 'etc/passwd'.*not found"):
        apply(dest, hardlink("pw", "/etc/passwd"))
    assert not (dest / "pw").exists()
    # with a passwd inside the root, the link is to that one, never to the host's
    apply(dest, file("etc/passwd", b"inside"), hardlink("pw", "/etc/passwd"))
    assert os.stat(dest / "pw").st_ino == os.stat(dest / "etc" / "passwd").st_ino
    assert os.stat(dest / "pw").st_ino != os.stat("/etc/passwd").st_ino


def test_hard_link_through_a_symlink_is_resolved_inside(dest_and_sentinel) -> None:
    dest, sentinel = dest_and_sentinel
    with pytest.raises(LayerError, match="not found"):
        apply(dest, symlink("s", str(sentinel)), hardlink("h", "s/keep"))
    with pytest.raises(LayerError, match="does not exist|not found"):
        apply(dest, symlink("e", "/etc"), hardlink("h2", "e/passwd"))


@pytest.mark.parametrize("target", ["../etc/passwd", "../sentinel/keep", "a/../../x"])
def test_hard_link_targets_with_dotdot_are_refused(dest_and_sentinel, target: str) -> None:
    dest, _ = dest_and_sentinel
    with pytest.raises(UnsafePathError, match="hard link 'h'"):
        apply(dest, hardlink("h", target))


def test_hard_link_to_a_directory_is_refused(dest_and_sentinel) -> None:
    dest, _ = dest_and_sentinel
    with pytest.raises(LayerError, match="directory"):
        apply(dest, directory("d"), hardlink("h", "d"))


def test_whiteouts_cannot_reach_outside(dest_and_sentinel) -> None:
    dest, sentinel = dest_and_sentinel
    apply(dest, symlink("s", str(sentinel)), file("s/.wh.keep", b""))
    apply(dest, symlink("t", "../sentinel"), directory("t2"), file("t/.wh..wh..opq", b""))
    flatten([io.BytesIO(make_tar([symlink("u", "../../sentinel")])),
             io.BytesIO(make_tar([file("u/.wh..wh..opq", b""), file("u/.wh.keep", b"")]))], dest)
    with pytest.raises(UnsafePathError, match="climbs out"):
        apply(dest, file("../sentinel/.wh.keep", b""))


def test_symlink_loops_are_refused(dest_and_sentinel) -> None:
    dest, _ = dest_and_sentinel
    with pytest.raises(UnsafePathError, match="too many levels of symbolic links"):
        apply(dest, symlink("a", "b"), symlink("b", "a"), file("a/x"))


def test_device_files_need_root(tmp_path: Path) -> None:
    """Unprivileged (as nobody, in a child): a device entry is refused by name, or skipped
    on request; a fifo is fine."""
    require_root()
    dev = info("dev/evil", tarfile.CHRTYPE)
    dev.devmajor, dev.devminor = 1, 3
    blob = tmp_path / "l.tar"
    blob.write_bytes(make_tar([(info("fifo", tarfile.FIFOTYPE), None), (dev, None)]))
    for mode in ("error", "skip"):
        dest = tmp_path / mode
        dest.mkdir()
        os.chown(dest, 65534, 65534)
        code, message = apply_as_nobody(blob, dest, mode)
        if mode == "error":
            assert code == 3, message
            assert "'dev/evil'" in message and "need root" in message
        else:
            assert code == 0, message
            assert (dest / "fifo").exists() and not (dest / "dev" / "evil").exists()
