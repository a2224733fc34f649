"""Applying layers: whiteouts and opaque directories as the OCI spec says, replacements."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from cloche.errors import LayerError
from cloche.layers import apply_layer, flatten
from cloche.oci.digest import Digest, DigestMismatchError
from tests.layers.helpers import directory, file, hardlink, make_tar, symlink, tree_files


def layer(*members) -> io.BytesIO:
    return io.BytesIO(make_tar(list(members)))


BASE = (directory("a"), file("a/1", b"one"), file("a/2", b"two"), file("b", b"bee"),
        directory("d"), file("d/old"), directory("d/sub"), file("d/sub/x"), file("keep"))


def test_whiteouts_delete_lower_paths_only(tmp_path: Path) -> None:
    flatten([layer(*BASE),
             layer(file("a/.wh.1", b""), file(".wh.b", b""), file(".wh.d", b""),
                   file(".wh.missing", b""), file("new", b"n"), file(".wh.new", b""))],
             tmp_path)
    # 'new' is in the same layer as its whiteout: whiteouts only hide lower layers
    assert tree_files(tmp_path) == {"a", "a/2", "keep", "new"}


def test_opaque_directory_hides_lower_contents(tmp_path: Path) -> None:
    flatten([layer(*BASE),
             layer(directory("d", 0o700), file("d/.wh..wh..opq", b""), file("d/new", b"n"))],
             tmp_path)
    assert sorted(os.listdir(tmp_path / "d")) == ["new"]
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "a" / "1").read_bytes() == b"one"


def test_opaque_marker_after_siblings_keeps_this_layers_entries(tmp_path: Path) -> None:
    flatten([layer(*BASE),
             layer(directory("d"), file("d/new", b"n"), file("d/.wh..wh..opq", b""))],
             tmp_path)
    assert sorted(os.listdir(tmp_path / "d")) == ["new"]


def test_entries_replace_what_is_there(tmp_path: Path) -> None:
    flatten([layer(*BASE),
             layer(file("d", b"now a file"), directory("b"), file("b/in"),
                   symlink("a", "d"), file("keep", b"replaced", mode=0o600))],
             tmp_path)
    assert (tmp_path / "d").read_bytes() == b"now a file"
    assert (tmp_path / "b").is_dir() and (tmp_path / "b" / "in").is_file()
    assert os.readlink(tmp_path / "a") == "d"
    assert (tmp_path / "keep").read_bytes() == b"replaced"
    assert (tmp_path / "keep").stat().st_mode & 0o777 == 0o600


def test_directory_entry_over_directory_merges(tmp_path: Path) -> None:
    flatten([layer(*BASE), layer(directory("a", 0o750), file("a/3"))], tmp_path)
    assert sorted(os.listdir(tmp_path / "a")) == ["1", "2", "3"]
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o750
    assert int((tmp_path / "a").stat().st_mtime) == 1_700_000_000


def test_parent_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    # merged-/usr images: lib -> usr/lib; a later layer writing lib/x lands in usr/lib/x
    flatten([layer(directory("usr"), directory("usr/lib"), symlink("lib", "usr/lib"),
                   symlink("abs", "/usr")),
             layer(file("lib/x", b"via relative"), file("abs/lib/y", b"via absolute"))],
            tmp_path)
    assert (tmp_path / "usr" / "lib" / "x").read_bytes() == b"via relative"
    assert (tmp_path / "usr" / "lib" / "y").read_bytes() == b"via absolute"
    assert os.path.islink(tmp_path / "lib")


def test_hard_links_and_missing_parents(tmp_path: Path) -> None:
    flatten([layer(file("deep/er/f", b"data"), hardlink("other/g", "deep/er/f"))], tmp_path)
    assert os.stat(tmp_path / "deep/er/f").st_ino == os.stat(tmp_path / "other/g").st_ino
    assert (tmp_path / "deep").stat().st_mode & 0o777 == 0o755


def test_aufs_bookkeeping_is_skipped(tmp_path: Path) -> None:
    flatten([layer(directory(".wh..wh.plnk"), file(".wh..wh.aufs", b""), file("f"))], tmp_path)
    assert tree_files(tmp_path) == {"f"}


def test_diff_id_is_verified(tmp_path: Path) -> None:
    blob = make_tar([file("f", b"x")])
    wrong = Digest.from_bytes(b"something else")
    with pytest.raises(DigestMismatchError):
        apply_layer(io.BytesIO(blob), tmp_path / "a", diff_id=wrong)
    assert apply_layer(io.BytesIO(blob), tmp_path / "b",
                       diff_id=Digest.from_bytes(blob)).entries == 1


def test_corrupt_and_truncated_tars_are_layer_errors(tmp_path: Path) -> None:
    blob = make_tar([file("big", os.urandom(20_000))])
    with pytest.raises(LayerError, match="big"):
        apply_layer(io.BytesIO(blob[:8_000]), tmp_path / "t")
    with pytest.raises(LayerError):
        apply_layer(io.BytesIO(b"\x01" * 1024), tmp_path / "c")


def test_a_file_as_parent_is_an_error_naming_the_entry(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="'f/x'.*not a directory"):
        flatten([layer(file("f"), file("f/x"))], tmp_path)


def test_gnu_style_names_and_old_formats(tmp_path: Path) -> None:
    name = "g/" + "n" * 150
    flatten([io.BytesIO(make_tar([file(name, b"gnu")], fmt=tarfile.GNU_FORMAT)),
             io.BytesIO(make_tar([file("./dot/slash", b"v7")], fmt=tarfile.USTAR_FORMAT))],
            tmp_path)
    assert (tmp_path / name).read_bytes() == b"gnu"
    assert (tmp_path / "dot" / "slash").read_bytes() == b"v7"


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_damaged_compressed_layers_are_layer_errors(tmp_path: Path, compression: str,
                                                    damage: str) -> None:
    from cloche.layers import Compression, write_tree
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        (src / f"f{i}").write_bytes(os.urandom(20_000))
    sink = io.BytesIO()
    write_tree(src, sink, Compression(compression))
    data = sink.getvalue()
    blob = data[:len(data) // 2] if damage == "truncate" else data[:30] + bytes(60) + data[90:]
    with pytest.raises(LayerError):
        apply_layer(io.BytesIO(blob), tmp_path / "dest")


def test_implicit_parents_are_0755_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        flatten([layer(file("x/y/z", b"z"))], tmp_path)
    finally:
        os.umask(old)
    assert (tmp_path / "x").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "x" / "y").stat().st_mode & 0o777 == 0o755


def test_flatten_verifies_diff_ids_and_closes_streams(tmp_path: Path) -> None:
    blobs = [make_tar([file("a", b"1")]), make_tar([file("b", b"2")])]
    streams = [io.BytesIO(b) for b in blobs]
    ids = [Digest.from_bytes(b) for b in blobs]
    results = flatten(streams, tmp_path / "ok", diff_ids=ids)
    assert [r.diff_id for r in results] == ids and all(s.closed for s in streams)
    with pytest.raises(DigestMismatchError):
        flatten([io.BytesIO(b) for b in blobs], tmp_path / "bad", diff_ids=ids[::-1])
    with pytest.raises(LayerError, match="diff_ids"):
        flatten([io.BytesIO(b) for b in blobs], tmp_path / "short", diff_ids=ids[:1])


def test_unprivileged_apply_fills_read_only_directories(tmp_path: Path) -> None:
    from tests.fixtures.services import require_root
    from tests.layers.helpers import apply_as_nobody
    require_root()
    blob = tmp_path / "l.tar"
    blob.write_bytes(make_tar([directory("ro", 0o555), file("ro/f", b"in"),
                               directory("ro/sub", 0o500), file("ro/sub/g", b"deep")]))
    dest = tmp_path / "dest"
    dest.mkdir()
    os.chown(dest, 65534, 65534)
    code, message = apply_as_nobody(blob, dest)
    assert code == 0, message
    assert (dest / "ro" / "sub" / "g").read_bytes() == b"deep"
    assert (dest / "ro").stat().st_mode & 0o777 == 0o555
    assert (dest / "ro" / "sub").stat().st_mode & 0o777 == 0o500
    assert (dest / "ro").stat().st_uid == 65534
