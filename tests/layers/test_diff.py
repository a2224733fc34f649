"""Overlay upper directory -> layer, with a real overlay mount made by the test.

The test mounts lower/upper/work, changes the merged view the way a RUN step would (create,
modify, chmod, delete, replace a directory, hard link, capability), unmounts, writes the upper
directory as a layer and checks both its entries and what it gives when applied over the lower.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cloche.errors import LayerError
from cloche.layers import (
    Compression,
    EntryType,
    LayerReader,
    flatten,
    upper_is_empty,
    write_overlay_diff,
    write_tree,
)
from tests.fixtures.services import require_root, require_tool
from tests.layers.helpers import snapshot

OPTIONS = "index=off,redirect_dir=off,metacopy=off,xino=off"


@contextmanager
def overlay(base: Path, options: str = OPTIONS) -> Iterator[tuple[Path, Path, Path]]:
    """(lower, upper, merged): an overlay mounted for the duration, lower filled by the caller
    before entering (it is created here when missing)."""
    require_root()
    lower, upper, work, merged = (base / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work},{options}", str(merged)],
                   check=True, capture_output=True)
    try:
        yield lower, upper, merged
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def fill_lower(lower: Path) -> None:
    lower.mkdir(parents=True)
    (lower / "etc" / "conf.d").mkdir(parents=True)
    (lower / "etc" / "conf.d" / "a.conf").write_text("a")
    (lower / "etc" / "conf.d" / "b.conf").write_text("b")
    (lower / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (lower / "etc" / "motd").write_text("hello")
    (lower / "var" / "cache" / "deep").mkdir(parents=True)
    (lower / "var" / "cache" / "deep" / "x").write_text("x")
    (lower / "bin").mkdir()
    (lower / "bin" / "tool").write_bytes(b"\x7fELF")


def entries_of(blob: bytes) -> dict[str, object]:
    return {e.path: e for e, _ in LayerReader(io.BytesIO(blob))}


def test_upper_dir_becomes_a_layer_with_oci_whiteouts(tmp_path: Path) -> None:
    fill_lower(tmp_path / "lower")
    with overlay(tmp_path) as (lower, upper, merged):
        (merged / "etc" / "motd").unlink()                           # delete a file
        (merged / "etc" / "hosts").write_text("10.0.0.1 db\n")       # modify
        shutil.rmtree(merged / "etc" / "conf.d")                      # replace a directory
        (merged / "etc" / "conf.d").mkdir()
        (merged / "etc" / "conf.d" / "new.conf").write_text("new")
        shutil.rmtree(merged / "var" / "cache")                       # delete a directory
        (merged / "opt" / "app").mkdir(parents=True)                  # create
        (merged / "opt" / "app" / "run").write_text("#!/bin/sh\n")
        os.link(merged / "opt" / "app" / "run", merged / "opt" / "app" / "run2")
        os.symlink("/opt/app/run", merged / "bin" / "app")
        os.chmod(merged / "bin" / "tool", 0o4755)                      # metadata-only change
        subprocess.run([require_tool("setcap", "apt-get install libcap2-bin"),
                        "cap_net_bind_service+ep", str(merged / "opt" / "app" / "run")],
                       check=True)
        expected = snapshot(merged)
    # overlay's notation in the upper directory, before conversion
    assert os.stat(upper / "etc" / "motd").st_rdev == 0
    assert os.getxattr(upper / "etc" / "conf.d", "trusted.overlay.opaque") == b"y"

    sink = io.BytesIO()
    written = write_overlay_diff(upper, sink, Compression.GZIP)
    entries = entries_of(sink.getvalue())
    paths = list(entries)
    assert paths == ["bin", "bin/app", "bin/tool", "etc", "etc/conf.d", "etc/conf.d/.wh..wh..opq",
                     "etc/conf.d/new.conf", "etc/hosts", "etc/.wh.motd", "opt", "opt/app",
                     "opt/app/run", "opt/app/run2", "var", "var/.wh.cache"]
    assert entries["etc/.wh.motd"].type is EntryType.FILE and entries["etc/.wh.motd"].size == 0
    assert entries["opt/app/run2"].type is EntryType.HARDLINK
    assert entries["opt/app/run2"].linkname == "opt/app/run"
    assert entries["bin/tool"].mode == 0o4755
    assert dict(entries["opt/app/run"].xattrs).get("security.capability")
    for entry in entries.values():   # overlay's bookkeeping never leaks
        assert not any(k.startswith(("trusted.overlay.", "user.overlay.")) for k, _ in entry.xattrs)

    # the lower plus this layer is what the merged view showed
    lower_blob = io.BytesIO()
    write_tree(tmp_path / "lower", lower_blob, Compression.NONE)
    flat = tmp_path / "flat"
    results = flatten([io.BytesIO(lower_blob.getvalue()), io.BytesIO(sink.getvalue())], flat)
    assert results[1].diff_id == written.diff_id
    assert snapshot(flat) == expected


def test_a_steps_layer_keeps_only_the_capability_xattr(tmp_path: Path) -> None:
    """As BuildKit's differ (containerd's change writer): a layer entry keeps
    security.capability and no other xattr; the upper directory (the snapshot) keeps them all."""
    fill_lower(tmp_path / "lower")
    with overlay(tmp_path) as (_, upper, merged):
        run = merged / "bin" / "run"
        run.write_text("#!/bin/sh\n")
        subprocess.run([require_tool("setcap", "apt-get install libcap2-bin"),
                        "cap_net_bind_service+ep", str(run)], check=True)
        os.setxattr(run, "user.note", b"not in the layer")
        os.setxattr(run, "trusted.note", b"nor this")
        os.setxattr(merged / "bin", "user.dir", b"nor this")
    sink = io.BytesIO()
    write_overlay_diff(upper, sink, Compression.NONE)
    entries = entries_of(sink.getvalue())
    assert [name for name, _ in entries["bin/run"].xattrs] == ["security.capability"]
    assert entries["bin"].xattrs == ()
    assert os.getxattr(upper / "bin" / "run", "user.note") == b"not in the layer"


def test_gnu_tar_lists_the_whiteouts(tmp_path: Path) -> None:
    tar = require_tool("tar")
    fill_lower(tmp_path / "lower")
    with overlay(tmp_path) as (_, upper, merged):
        (merged / "etc" / "motd").unlink()
    with open(tmp_path / "l.tar", "wb") as f:
        write_overlay_diff(upper, f, Compression.NONE)
    out = subprocess.run([tar, "-tf", str(tmp_path / "l.tar")], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["etc/", "etc/.wh.motd"]


def test_a_step_that_changes_nothing_makes_no_layer(tmp_path: Path) -> None:
    fill_lower(tmp_path / "lower")
    with overlay(tmp_path) as (_, upper, merged):
        assert (merged / "etc" / "hosts").read_text().startswith("127.0.0.1")  # reads only
        assert sorted(os.listdir(merged / "etc"))
    assert upper_is_empty(upper)
    with overlay(tmp_path) as (_, upper, merged):
        (merged / "new").write_text("x")
    assert not upper_is_empty(upper)


def test_the_same_upper_dir_gives_the_same_digest(tmp_path: Path) -> None:
    fill_lower(tmp_path / "lower")
    with overlay(tmp_path) as (_, upper, merged):
        (merged / "etc" / "motd").unlink()
        (merged / "data").write_bytes(os.urandom(100_000))
    digests = set()
    for _ in range(2):
        digests.add(write_overlay_diff(upper, io.BytesIO(), Compression.ZSTD).digest)
    assert len(digests) == 1


def test_redirected_directories_are_refused(tmp_path: Path) -> None:
    """Mounted with redirect_dir=on a renamed directory keeps its files in the lower layer;
    writing only the upper would lose them, so that is an error, not a wrong layer."""
    fill_lower(tmp_path / "lower")
    try:
        with overlay(tmp_path, "index=off,redirect_dir=on,metacopy=off") as (_, upper, merged):
            os.rename(merged / "var" / "cache", merged / "var" / "moved")
    except subprocess.CalledProcessError as e:
        pytest.fail(f"overlay with redirect_dir=on did not mount: {e.stderr!r}")
    with pytest.raises(LayerError, match="redirect"):
        write_overlay_diff(upper, io.BytesIO(), Compression.NONE)
