"""Issue 9, item 20: a killed build leaves no scratch behind for good.

Before the fix, kill -9 left ``extracting-*`` folders beside flattened base images (a stored
image's folder, which prune keeps, so for ever) and ``$TMPDIR/cloche-run-*`` and
``cloche-heredoc-*`` that nothing removed. Each build now keeps its scratch in its own folder
under the store, which the next build and ``cloche prune`` remove once the build is dead; the
sandbox used on its own names its $TMPDIR scratch with its PID, swept the same way.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

import pytest

from cloche.store import Store
from tests.engine.conftest import BASE, CLOCHE, Builder

MANY = "many-files:1"


def _dead_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _cloche(builder: Builder, tmpdir: Path, *args: str) -> subprocess.Popen[bytes]:
    """``cloche ARGS --root STORE`` with its own $TMPDIR, so that what it leaves there is its."""
    env = dict(os.environ, TMPDIR=str(tmpdir))
    argv = CLOCHE + [args[0], "--root", str(builder.root), *args[1:]]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=builder.dir)


def _finish(proc: subprocess.Popen[bytes]) -> None:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode(errors="replace")


def _leftovers(builder: Builder, tmpdir: Path) -> list[str]:
    """Scratch that no running build owns: in $TMPDIR, beside base images, in builds/."""
    root = builder.root
    found = [str(p) for p in tmpdir.iterdir()]
    found += [str(p) for p in root.glob("snapshots/images/*/extracting-*")]
    found += [str(p) for p in root.glob("snapshots/steps/*/unpacking-*")]
    found += [str(p) for p in (root / "builds").glob("*")] if (root / "builds").is_dir() else []
    return found


def _wait_for(proc: subprocess.Popen[bytes], find: object, what: str, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while not find():  # type: ignore[operator]
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"never saw {what}: {proc.communicate()}")
        time.sleep(0.002)


@pytest.fixture
def many_files(builder: Builder, busybox_rootfs: Path, tmp_path: Path) -> str:
    """A stored base image whose flattening takes a while: busybox and 40,000 small files."""
    from cloche.ops.importer import import_rootfs

    tree = tmp_path / "many"
    subprocess.run(["cp", "-a", f"{busybox_rootfs}/.", str(tree)], check=True)
    for d in range(200):
        folder = tree / "data" / f"d{d}"
        folder.mkdir(parents=True)
        for f in range(200):
            (folder / f"f{f}").write_bytes(b"x" * 64)
    import_rootfs(Store.open(builder.root), tree, names=[MANY])
    return MANY


def test_kill_9_while_a_base_image_is_flattened_leaves_nothing(
        builder: Builder, many_files: str, tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    ctx = builder.context(f"FROM {many_files}\nRUN true\n")
    root = builder.root

    def extracting() -> bool:
        return any(root.glob("snapshots/images/*/extracting-*")) \
            or any(root.glob("builds/*/extracting-*"))

    proc = _cloche(builder, tmpdir, "build", "--progress", "plain", str(ctx))
    try:
        _wait_for(proc, extracting, "the base image being flattened")
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _leftovers(builder, tmpdir) != []  # the kill came at the right moment
    _finish(_cloche(builder, tmpdir, "build", "--progress", "plain", str(ctx)))
    assert _leftovers(builder, tmpdir) == []  # the next build swept them
    images = list(root.glob("snapshots/images/*/rootfs"))
    assert images and (images[0] / "data" / "d199" / "f199").is_file()


def test_kill_9_during_a_step_leaves_no_scratch(builder: Builder, tmp_path: Path) -> None:
    """A RUN with a heredoc script (``cloche-heredoc-*``) and the sandbox's files
    (``cloche-run-*``) is killed; the next ``cloche prune`` and build find nothing left."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    sleeper = f"sleep {4000 + os.getpid() % 997}"
    ctx = builder.context(f"FROM {BASE}\nRUN <<EOF\n#!/bin/sh\n{sleeper}\nEOF\n"
                          "COPY <<EOF /greeting\nhello\nEOF\n")

    def running() -> bool:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().replace(b"\0", b" ").strip() == sleeper.encode():
                        return True
            except OSError:
                continue
        return False

    proc = _cloche(builder, tmpdir, "build", "--progress", "plain", str(ctx))
    try:
        _wait_for(proc, running, "the step running")
        group = _pids_group(sleeper)
        assert group.name.startswith("step-")
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10
    while running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running()
    assert _leftovers(builder, tmpdir) != []
    assert group.is_dir()
    _finish(_cloche(builder, tmpdir, "prune", "--force"))
    assert _leftovers(builder, tmpdir) == []
    assert not group.exists() and not group.parent.exists(), "the step's cgroup stayed"


def _pids_group(command: str) -> Path:
    """The host directory of the pids cgroup of the process running ``command``."""
    from tests.security.procs import pids_of
    from tests.security.test_limits import _group_dir

    return _group_dir(pids_of(command)[0], "pids")


def test_planted_stale_scratch_is_swept_and_live_scratch_kept(builder: Builder,
                                                              tmp_path: Path) -> None:
    """Scratch of dead owners (a $TMPDIR folder named with a dead PID, a build folder whose
    lock is free, an extraction of cloche before the fix) goes; a live build's stays."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    dead = _dead_pid()
    stale = [tmpdir / f"cloche-run-{dead}-abcd1234", tmpdir / f"cloche-heredoc-{dead}-x1y2z3w4",
             tmpdir / f"cloche-lower-{dead}-q9w8e7r6"]
    for path in stale:
        (path / "inner").mkdir(parents=True)
    live_tmp = tmpdir / f"cloche-run-{os.getpid()}-live0000"  # this process lives
    live_tmp.mkdir()
    legacy_old = tmpdir / "cloche-heredoc-k2j4h6g8"  # before the fix: no PID in the name
    legacy_old.mkdir()
    os.utime(legacy_old, (time.time() - 2 * 86400,) * 2)
    stale.append(legacy_old)
    legacy_new = tmpdir / "cloche-run-a1b2c3d4"  # as old, but made now: maybe in use
    legacy_new.mkdir()
    other = tmpdir / "unrelated-123-abc"
    other.mkdir()
    builds = builder.root / "builds"
    builds.mkdir(exist_ok=True)
    dead_build = builds / "build-000000000dead"
    (dead_build / "extracting-1").mkdir(parents=True)
    (builds / "build-000000000dead.lock").touch()
    live_build = builds / "build-00000000live"
    live_build.mkdir()
    dead_probe = builds / f"cloche-probe-{dead}-p1r2o3b4"  # the overlay probe of a killed cloche
    (dead_probe / "lower").mkdir(parents=True)
    stale.append(dead_probe)
    live_probe = builds / f"cloche-probe-{os.getpid()}-p5r6o7b8"
    live_probe.mkdir()
    fd = os.open(builds / "build-00000000live.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    old_style = builder.root / "snapshots" / "images" / ("0" * 64) / f"extracting-{dead}-1"
    (old_style / "bin").mkdir(parents=True)
    old_unpack = builder.root / "snapshots" / "steps" / ("1" * 32) / f"unpacking-{dead}-7"
    (old_unpack / "etc").mkdir(parents=True)
    try:
        _finish(_cloche(builder, tmpdir, "build", "--progress", "plain",
                        str(builder.context(f"FROM {BASE}\nRUN true\n"))))
        assert [p for p in stale if p.exists()] == []
        assert not dead_build.exists() and not (builds / "build-000000000dead.lock").exists()
        assert not old_style.exists()
        assert live_tmp.is_dir() and other.is_dir() and live_build.is_dir()
        assert legacy_new.is_dir() and live_probe.is_dir()
        # prune sweeps too
        (dead_build / "x").mkdir(parents=True)
        (builds / "build-000000000dead.lock").touch()
        stale[0].mkdir()
        _finish(_cloche(builder, tmpdir, "prune", "--force"))
        assert not stale[0].exists() and not dead_build.exists()
        assert not old_unpack.exists()
        assert live_tmp.is_dir() and live_build.is_dir()
    finally:
        os.close(fd)


def _pids_base() -> Path:
    """Where cloche puts its steps' pids cgroups on this host (see sandbox/cgroups.py)."""
    from tests.security.test_limits import _cgroup_mounts

    own = {names: path for _, names, path in
           (line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines())}
    for point, fstype, controllers in _cgroup_mounts():
        if "pids" in controllers:
            if fstype == "cgroup2":
                return Path(point) / "cloche"
            group = next(path for names, path in own.items() if "pids" in names.split(","))
            return Path(point + group.rstrip("/")) / "cloche"
    raise AssertionError("no pids cgroup on this host")


def test_cgroups_of_builds_killed_with_another_store_are_swept(builder: Builder,
                                                                tmp_path: Path) -> None:
    """A killed build whose store is gone left its cgroups: a step group empty for a minute
    is stale (a step's init joins its group the moment it is made) and goes with its build
    group; a fresh empty one may be a step starting now, and stays."""
    base = _pids_base()
    stale = base / "build-0000000dead0" / "step-0000000dead0"
    fresh = base / "build-00000000new0" / "step-00000000new0"
    for group in (stale, fresh):
        group.parent.mkdir(parents=True, exist_ok=True)
        group.mkdir()
    os.utime(stale, (time.time() - 3600,) * 2)
    try:
        _finish(_cloche(builder, tmp_path, "build", "--progress", "plain",
                        str(builder.context(f"FROM {BASE}\nRUN true\n"))))
        assert not stale.exists() and not stale.parent.exists()
        assert fresh.is_dir()
    finally:
        for group in (stale, fresh, stale.parent, fresh.parent):
            if group.exists():
                group.rmdir()
