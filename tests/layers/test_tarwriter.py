"""The deterministic tar writer: headers as GNU tar and Python read them, digests, epochs."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from cloche.errors import LayerError
from cloche.layers import Compression, EntryType, TarEntry, TarWriter, write_tree
from cloche.layers.tarwriter import encode_header
from tests.fixtures.services import require_tool

CAP = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_raw+ep, binary


def _tar_bytes(entries: list[tuple[TarEntry, bytes | None]]) -> tuple[bytes, object]:
    sink = io.BytesIO()
    with TarWriter(sink, Compression.NONE) as w:
        for entry, data in entries:
            w.add(entry, io.BytesIO(data) if data is not None else None)
    return sink.getvalue(), w.result


def test_headers_are_normalised_and_read_back_by_tarfile() -> None:
    long_name = "deep/" + "n" * 180 + "/file"
    entries = [
        (TarEntry("bin", EntryType.DIR, mode=0o755, mtime=10), None),
        (TarEntry("bin/su", EntryType.FILE, mode=0o4755, uid=0, gid=0, size=3, mtime=11,
                  xattrs=(("security.capability", CAP), ("user.note", "é".encode()))), b"abc"),
        (TarEntry("bin/su2", EntryType.HARDLINK, mode=0o4755, linkname="bin/su", mtime=11), None),
        (TarEntry("tmp", EntryType.DIR, mode=0o1777, mtime=12), None),
        (TarEntry(long_name, EntryType.FILE, uid=3_000_000, gid=70_000, size=1, mtime=13), b"z"),
        (TarEntry("lnk", EntryType.SYMLINK, mode=0o777, linkname="/" + "t" * 150), None),
        (TarEntry("dev/null", EntryType.CHAR, mode=0o666, devmajor=1, devminor=3), None),
        (TarEntry("dev/sda", EntryType.BLOCK, mode=0o660, devmajor=8, devminor=0), None),
        (TarEntry("fifo", EntryType.FIFO, mode=0o600), None),
        (TarEntry("caf\u00e9/\udcff-raw", EntryType.FILE, size=0), b""),
    ]
    data, result = _tar_bytes(entries)
    assert result.digest == result.diff_id and result.size == len(data)
    assert result.diff_id.hex == hashlib.sha256(data).hexdigest()
    assert len(data) % 512 == 0 and data.endswith(b"\x00" * 1024)
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as tf:
        members = tf.getmembers()
        names = [m.name for m in members]
        assert names == ["bin", "bin/su", "bin/su2", "tmp", long_name, "lnk", "dev/null",
                         "dev/sda", "fifo", "caf\u00e9/\udcff-raw"]
        by = {m.name: m for m in members}
        assert all(m.uname == "" and m.gname == "" for m in members)
        assert by["bin/su"].mode == 0o4755 and tf.extractfile("bin/su").read() == b"abc"
        assert by["bin/su"].pax_headers["SCHILY.xattr.security.capability"].encode(
            "utf-8", "surrogateescape") == CAP
        assert by["bin/su2"].islnk() and by["bin/su2"].linkname == "bin/su"
        assert by["tmp"].mode == 0o1777 and by["tmp"].isdir()
        assert by[long_name].uid == 3_000_000 and by[long_name].gid == 70_000
        assert by["lnk"].linkname == "/" + "t" * 150
        assert (by["dev/null"].devmajor, by["dev/null"].devminor) == (1, 3) and by["dev/null"].ischr()
        assert by["dev/sda"].isblk() and by["fifo"].isfifo()
        assert not any("atime" in m.pax_headers or "ctime" in m.pax_headers for m in members)


def test_gnu_tar_lists_what_cloche_writes(tmp_path: Path) -> None:
    tar = require_tool("tar")
    (tmp_path / "src" / "d").mkdir(parents=True)
    (tmp_path / "src" / "d" / ("long-" * 30)).write_bytes(b"hello")
    (tmp_path / "src" / "exe").write_bytes(b"#!/bin/sh\n")
    os.chmod(tmp_path / "src" / "exe", 0o2755)
    os.link(tmp_path / "src" / "exe", tmp_path / "src" / "d" / "exe-again")
    os.symlink("../exe", tmp_path / "src" / "d" / "up")
    out = tmp_path / "layer.tar"
    with open(out, "wb") as f:
        write_tree(tmp_path / "src", f, Compression.NONE, source_date_epoch=1_600_000_000)
    listing = subprocess.run([tar, "--numeric-owner", "--full-time", "-tvf", str(out)],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    assert [line.split()[-1] if "->" not in line and "link to" not in line else line.split()[5]
            for line in listing] == ["d/", "d/exe-again", "d/" + "long-" * 30, "d/up", "exe"]
    assert listing[1].startswith("-rwxr-sr-x 0/0") and listing[1].endswith("d/exe-again")
    assert listing[4].startswith("hrwxr-sr-x") and listing[4].endswith("exe link to d/exe-again")
    assert "d/up -> ../exe" in listing[3]
    assert all("2020-09-13 12:26:40" in line for line in listing)  # clamped to the epoch
    # and GNU tar extracts it to the same bytes
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run([tar, "-xf", str(out), "-C", str(dest)], check=True)
    assert (dest / "d" / ("long-" * 30)).read_bytes() == b"hello"
    assert os.stat(dest / "exe").st_ino == os.stat(dest / "d" / "exe-again").st_ino


def test_gnu_tar_restores_binary_capability_xattr(tmp_path: Path) -> None:
    tar = require_tool("tar")
    getcap = require_tool("getcap", "apt-get install libcap2-bin")
    data, _ = _tar_bytes([(TarEntry("ping", EntryType.FILE, mode=0o755, size=2,
                                    xattrs=(("security.capability", CAP),)), b"#!")])
    (tmp_path / "l.tar").write_bytes(data)
    subprocess.run([tar, "--xattrs", "--xattrs-include=*", "-xf", str(tmp_path / "l.tar"),
                    "-C", str(tmp_path)], check=True)
    out = subprocess.run([getcap, str(tmp_path / "ping")], capture_output=True, text=True).stdout
    assert "cap_net_raw=ep" in out


def test_same_tree_same_digest_and_epoch_rules(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    for i in range(30):
        (src / "a" / f"f{i:02}").write_bytes(os.urandom(1000) * 50)
    os.utime(src / "a" / "f00", (1_000, 1_000))

    def write(**kw) -> object:
        with open(tmp_path / "out", "wb") as f:
            return write_tree(src, f, Compression.GZIP, **kw)

    first, second = write(), write()
    assert first.digest == second.digest and first.diff_id == second.diff_id
    assert first.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert first.entries == 32
    clamped = write(source_date_epoch=5_000)
    with tarfile.open(tmp_path / "out") as tf:
        mtimes = {m.name: m.mtime for m in tf.getmembers()}
    assert mtimes["a/f00"] == 1_000 and mtimes["a/f01"] == 5_000 and mtimes["a"] == 5_000
    fixed = write(source_date_epoch=5_000, clamp=False)
    with tarfile.open(tmp_path / "out") as tf:
        assert {m.mtime for m in tf.getmembers()} == {5_000}
    assert len({first.diff_id, clamped.diff_id, fixed.diff_id}) == 3


def test_entries_are_sorted_by_bytes_depth_first(tmp_path: Path) -> None:
    for name in ("b", "a-b", "a/z", "a/b", "B", "\u00e9"):
        p = tmp_path / "src" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(name)
    with open(tmp_path / "out", "wb") as f:
        write_tree(tmp_path / "src", f, Compression.NONE)
    with tarfile.open(tmp_path / "out") as tf:
        assert tf.getnames() == ["B", "a", "a/b", "a/z", "a-b", "b", "\u00e9"]


def test_a_file_that_shrinks_while_archived_is_an_error() -> None:
    with pytest.raises(LayerError, match="shrank"):
        _tar_bytes([(TarEntry("f", EntryType.FILE, size=10), b"short")])


def test_pax_header_only_when_needed() -> None:
    assert len(encode_header(TarEntry("short", EntryType.FILE))) == 512
    assert len(encode_header(TarEntry("x" * 101, EntryType.FILE))) > 512
    assert len(encode_header(TarEntry("big", EntryType.FILE, size=9 * 1024 ** 3))) > 512


def test_missing_or_non_directory_root_is_a_layer_error(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="no such directory"):
        write_tree(tmp_path / "absent", io.BytesIO(), Compression.NONE)
    (tmp_path / "f").write_text("x")
    with pytest.raises(LayerError, match="not a directory"):
        write_tree(tmp_path / "f", io.BytesIO(), Compression.NONE)


def test_large_sizes_and_ids_go_to_pax_records_that_tarfile_reads() -> None:
    big = 9 * 1024 ** 3 + 7
    header = encode_header(TarEntry("huge", EntryType.FILE, size=big, uid=2 ** 31, mtime=2 ** 34))
    assert b" size=%d\n" % big in header and b" uid=%d\n" % 2 ** 31 in header
    with tarfile.open(fileobj=io.BytesIO(header + b"\x00" * 1024), mode="r|") as tf:
        member = tf.next()
        assert (member.name, member.size, member.uid, member.mtime) == ("huge", big, 2 ** 31, 2 ** 34)
