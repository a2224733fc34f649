"""Real overlay mounts: layer order, deep stacks, whiteouts, opaque dirs and pruning."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

import pytest

from cloche.sandbox import RunSpec, mount_overlay, prune_copied_up, run
from tests.fixtures.services import require_root


def _dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    require_root()
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    return upper, work, merged


def _mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def _layers(tmp_path: Path, n: int) -> list[Path]:
    """n lower dirs, top first: each has its own file, and all have ``same`` with its index."""
    layers = []
    for i in range(n):
        d = tmp_path / "layers" / str(i)
        d.mkdir(parents=True)
        (d / f"only-{i}").write_text("")
        (d / "same").write_text(str(i))
        layers.append(d)
    return layers


@pytest.mark.parametrize("count", [1, 3, 260, 700])
def test_layers_stack_top_first_at_any_depth(tmp_path: Path, count: int) -> None:
    upper, work, merged = _dirs(tmp_path)
    lowers = _layers(tmp_path, count)
    with mount_overlay(lowers, upper, work, merged):
        assert (merged / "same").read_text() == "0"
        assert len(os.listdir(merged)) == count + 1
        (merged / "only-0").unlink()
        (merged / "added").write_text("new")
    assert not _mounted(merged)
    assert sorted(os.listdir(upper)) == ["added", "only-0"]
    assert stat.S_ISCHR(os.lstat(upper / "only-0").st_mode)
    assert not any(p.name.startswith("cloche-lower-") for p in Path("/tmp").iterdir()
                   if p.is_dir() and _mounted(p))


def test_a_writable_overlay_is_volatile(tmp_path: Path) -> None:
    """Unmounting a step's overlay does not sync what it wrote (the cache copes after a
    reboot, see tests/engine/test_plain_layers.py); read-only overlays have no upper."""
    upper, work, merged = _dirs(tmp_path)
    with mount_overlay(_layers(tmp_path, 2), upper, work, merged):
        with open("/proc/self/mountinfo") as f:
            line = next(x for x in f if x.split()[4] == str(merged))
    options = line.split(" - ", 1)[1].split()[2].split(",")
    assert "volatile" in options or "fsync=volatile" in options  # newer kernels say the latter


def test_no_lowers_uses_an_empty_dir(tmp_path: Path) -> None:
    upper, work, merged = _dirs(tmp_path)
    with mount_overlay([], upper, work, merged):
        assert os.listdir(merged) == []
        (merged / "f").write_text("x")
    assert (upper / "f").read_text() == "x"


def test_replaced_dir_is_opaque_and_renamed_dir_is_copied(tmp_path: Path) -> None:
    upper, work, merged = _dirs(tmp_path)
    lower = tmp_path / "lower"
    (lower / "d").mkdir(parents=True)
    (lower / "d" / "old").write_text("old")
    (lower / "r").mkdir()
    (lower / "r" / "kept").write_text("k")
    with mount_overlay([lower], upper, work, merged):
        (merged / "d" / "old").unlink()
        (merged / "d").rmdir()
        (merged / "d").mkdir()
        with pytest.raises(OSError) as info:  # redirect_dir=off: mv falls back to a copy
            (merged / "r").rename(merged / "r2")
        assert info.value.errno == errno.EXDEV
        shutil.move(merged / "r", merged / "r2")
    assert os.getxattr(upper / "d", "trusted.overlay.opaque") == b"y"
    assert (upper / "r2" / "kept").read_text() == "k"  # copied, not a redirect
    assert stat.S_ISCHR(os.lstat(upper / "r").st_mode)
    with pytest.raises(OSError):
        os.getxattr(upper / "r2", "trusted.overlay.redirect")


def test_stub_parents_are_pruned_after_unmount(busybox_rootfs: Path, tmp_path: Path) -> None:
    upper, work, merged = _dirs(tmp_path)
    assert not (busybox_rootfs / "etc" / "hosts").exists()  # so /etc gets a stub
    with mount_overlay([busybox_rootfs], upper, work, merged):
        result = run(RunSpec(merged, ("true",)))
    assert result.ok
    assert "/etc/hosts" in result.stubs and result.stub_parents == ("/etc",)
    assert os.listdir(upper) == ["etc"] and os.listdir(upper / "etc") == []
    assert prune_copied_up(upper, [busybox_rootfs], result.stub_parents) == ("/etc",)
    assert os.listdir(upper) == []


def test_prune_keeps_directories_the_step_changed(busybox_rootfs: Path, tmp_path: Path) -> None:
    upper, work, merged = _dirs(tmp_path)
    with mount_overlay([busybox_rootfs], upper, work, merged):
        result = run(RunSpec(merged, ("/bin/sh", "-c", "echo x > /etc/motd; chmod 700 /tmp")))
    assert result.ok
    prune_copied_up(upper, [busybox_rootfs], ("/etc", "/tmp", "/nowhere", "/../etc"))
    assert sorted(os.listdir(upper)) == ["etc", "tmp"]
    assert (upper / "etc" / "motd").read_text() == "x\n"
