"""Tree -> layer -> apply gives the same tree: every entry type, owners, modes, xattrs, links."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloche.layers import Compression, LayerReader, apply_layer, flatten, write_tree
from tests.fixtures.services import require_root, require_tool
from tests.layers.helpers import snapshot


def make_every_kind(root: Path) -> Path:
    """A tree with every entry type a layer can hold."""
    require_root()
    (root / "etc" / "deep" / ("x" * 120)).mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "etc" / "deep" / ("x" * 120) / ("y" * 140)).write_bytes(os.urandom(70_000))
    (root / "bin").mkdir()
    (root / "bin" / "ping").write_bytes(b"\x7fELF" + os.urandom(5000))
    os.chmod(root / "bin" / "ping", 0o4755)
    subprocess.run([require_tool("setcap", "apt-get install libcap2-bin"),
                    "cap_net_raw+ep", str(root / "bin" / "ping")], check=True)
    os.setxattr(root / "etc" / "passwd", "user.origin", b"\x00\xffbinary")
    os.setxattr(root / "etc", "trusted.note", b"kept")
    os.link(root / "bin" / "ping", root / "bin" / "ping6")
    os.symlink("ping", root / "bin" / "p")
    os.symlink("/etc/passwd", root / "bin" / "abs")
    os.symlink("../nowhere", root / "bin" / "dangling")
    (root / "tmp").mkdir(mode=0o1777)
    os.chmod(root / "tmp", 0o1777)
    (root / "home" / "app").mkdir(parents=True)
    (root / "home" / "app" / "notes").write_text("mine")
    os.chown(root / "home" / "app", 1000, 1000)
    os.chown(root / "home" / "app" / "notes", 1000, 50)
    os.chmod(root / "home" / "app" / "notes", 0o640)
    (root / "dev").mkdir()
    os.mknod(root / "dev" / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(root / "dev" / "loop0", 0o660 | 0o060000, os.makedev(7, 0))
    os.mkfifo(root / "dev" / "fifo", 0o620)
    (root / "empty").write_bytes(b"")
    (root / "caf\u00e9 \udcff").write_text("odd names")
    os.chmod(root / "caf\u00e9 \udcff", 0o2711)
    for p in (root / "bin" / "p", root / "bin" / "abs"):
        os.utime(p, (1_500_000_000, 1_500_000_000), follow_symlinks=False)
    os.utime(root / "etc" / "passwd", (1_400_000_000, 1_400_000_000))
    return root


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD, Compression.NONE])
def test_every_entry_type_survives_the_round_trip(tmp_path: Path, compression: Compression) -> None:
    src = make_every_kind(tmp_path / "src")
    before = snapshot(src)
    blob = tmp_path / "layer"
    with open(blob, "wb") as f:
        written = write_tree(src, f, compression)
    dest = tmp_path / "dest"
    with open(blob, "rb") as f:
        applied = apply_layer(f, dest, diff_id=written.diff_id)
    assert applied.diff_id == written.diff_id
    after = snapshot(dest)
    assert after == before
    assert os.getxattr(dest / "bin" / "ping", "security.capability")
    # writing the applied tree again gives the very same layer
    with open(tmp_path / "again", "wb") as f:
        assert write_tree(dest, f, compression).digest == written.digest


def test_gnu_tar_reads_the_layer_as_we_do(tmp_path: Path) -> None:
    tar = require_tool("tar")
    src = make_every_kind(tmp_path / "src")
    with open(tmp_path / "l.tar", "wb") as f:
        write_tree(src, f, Compression.NONE)
    gnu = tmp_path / "gnu"
    gnu.mkdir()
    subprocess.run([tar, "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf",
                    str(tmp_path / "l.tar"), "-C", str(gnu)], check=True)
    ours = tmp_path / "ours"
    with open(tmp_path / "l.tar", "rb") as f:
        apply_layer(f, ours)
    assert snapshot(gnu) == snapshot(ours)


def test_layer_reader_reports_entries_in_order_and_the_diff_id(tmp_path: Path) -> None:
    src = make_every_kind(tmp_path / "src")
    sink = io.BytesIO()
    written = write_tree(src, sink, Compression.GZIP)
    reader = LayerReader(io.BytesIO(sink.getvalue()))
    paths = [entry.path for entry, _ in reader]
    assert paths == sorted(paths, key=lambda p: [os.fsencode(c) for c in p.split("/")])
    assert reader.diff_id == written.diff_id


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.dictionaries(
    st.lists(st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
                     min_size=1, max_size=40).filter(lambda s: s not in (".", "..")),
             min_size=1, max_size=3).map(tuple),
    st.binary(max_size=2000), max_size=8))
def test_property_random_trees_round_trip(tmp_path_factory, files) -> None:
    base = tmp_path_factory.mktemp("prop")
    src = base / "src"
    src.mkdir()
    for parts, data in files.items():
        target = src.joinpath(*parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.write_bytes(data)
        except (NotADirectoryError, FileExistsError, OSError):
            continue  # a name used both as a file and as a directory
    sink = io.BytesIO()
    write_tree(src, sink, Compression.ZSTD)
    flatten([io.BytesIO(sink.getvalue())], base / "dest")
    assert snapshot(base / "dest") == snapshot(src)
