"""Issue 9, items 10, 19 and 21: what a build writes outside the store.

10. ``-o type=local,dest=DIR`` replayed the image's whiteouts over DIR: an image whose layer
    holds ``.wh..wh..opq`` emptied the caller's directory. BuildKit's local exporter receives
    the final tree with fsutil's ``Merge: true``: it writes the image's files and leaves the
    others alone, and so does cloche now.
19. ``-o type=tar`` wrote under the final name (a kill left a truncated tar there) and
    flattened into a scratch folder in the store root that ``prune`` never saw.
21. A write error on a file the caller named printed ``error:: No space left on device``.
"""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from cloche.ops.importer import import_rootfs
from tests.engine.conftest import CLOCHE, Builder

# --- 10: the local exporter ------------------------------------------------------------------


def _layer_tar(files: dict[str, bytes], whiteouts: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in whiteouts:
            tar.addfile(tarfile.TarInfo(name))
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_local_export_never_deletes_the_callers_files(builder: Builder, tmp_path: Path) -> None:
    """An image whose layer is all whiteouts (root opaque, a named one, a sub-folder opaque),
    exported over a folder of the caller's: their files stay, the image's are written."""
    evil = _layer_tar({"hello.txt": b"image\n", "sub/new.txt": b"image\n", "mine.txt": b"new\n"},
                      [".wh..wh..opq", ".wh.victim", "sub/.wh..wh..opq"])
    import_rootfs(builder.store, io.BytesIO(evil), names=["whiteouts:1"])
    dest = tmp_path / "out"
    (dest / "sub").mkdir(parents=True)
    (dest / "victim").write_text("user\n")
    (dest / "keep.txt").write_text("user\n")
    (dest / "sub" / "keep.txt").write_text("user\n")
    (dest / "mine.txt").write_text("user\n")
    ctx = builder.context("FROM whiteouts:1\n")
    builder.cli("build", "-o", f"type=local,dest={dest}", str(ctx))
    assert (dest / "victim").read_text() == "user\n"
    assert (dest / "keep.txt").read_text() == "user\n"
    assert (dest / "sub" / "keep.txt").read_text() == "user\n"
    assert (dest / "hello.txt").read_text() == "image\n"
    assert (dest / "sub" / "new.txt").read_text() == "image\n"
    assert (dest / "mine.txt").read_text() == "new\n"  # the image's file wins, as in BuildKit
    assert not any(p.name.startswith(".wh.") for p in dest.rglob("*"))


def test_local_export_writes_the_final_tree(builder: Builder, tmp_path: Path) -> None:
    """Two layers, the second deleting a file of the first: the file is not exported."""
    from cloche.oci.mutate import append_layers

    _, lower = import_rootfs(builder.store, io.BytesIO(
        _layer_tar({"gone.txt": b"lower\n", "d/kept.txt": b"lower\n"}, [])))
    _, upper = import_rootfs(builder.store, io.BytesIO(_layer_tar({}, [".wh.gone.txt"])))
    builder.store.put_image(append_layers(lower, upper.layers), ["two:1"])
    ctx = builder.context("FROM two:1\nCOPY new.txt /d/\n", {"new.txt": "new\n"})
    dest = tmp_path / "out"
    builder.cli("build", "-o", f"type=local,dest={dest}", str(ctx))
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == \
        ["d", "d/kept.txt", "d/new.txt"]


# --- 19: the tar exporter is atomic, its scratch is the store's ------------------------------


def _fds_into(pid: int, folder: Path) -> list[Path]:
    """The files (maybe unlinked) process ``pid`` holds open in ``folder``."""
    out = []
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return out
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith(str(folder) + "/"):
            out.append(Path(f"/proc/{pid}/fd/{name}"))
    return out


STORE_ENTRIES = {"oci-layout", "index.json", "index.lock", "blobs", "tmp", "snapshots", "cache",
                 "builds", "gc.lock"}


def test_killed_tar_export_leaves_no_file_and_no_scratch(builder: Builder,
                                                         tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "zeros", "wb") as f:  # written, not sparse: the export has to copy it
        for _ in range(256):
            f.write(b"\1" * (1 << 20))
    import_rootfs(builder.store, big, names=["big:1"])
    ctx = builder.context("FROM big:1\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    out = dest / "rootfs.tar"
    proc = subprocess.Popen(CLOCHE + ["build", "--root", str(builder.root), "-o",
                                      f"type=tar,dest={out}", str(ctx)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        held = [fd for fd in _fds_into(proc.pid, dest) if _size(fd) > (8 << 20)]
        if held:  # writing the tar, well under way
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.002)
    proc.wait(30)
    assert killed, "the export ended before it could be killed"
    assert not out.exists(), f"{out} is {out.stat().st_size} bytes after the kill"
    assert list(dest.iterdir()) == []
    builder.cli("prune", "-f")
    assert set(os.listdir(builder.root)) <= STORE_ENTRIES, sorted(os.listdir(builder.root))
    assert list((builder.root / "builds").iterdir()) == []


def _size(fd: Path) -> int:
    try:
        return os.stat(fd).st_size
    except OSError:
        return 0


def test_tar_export_replaces_a_file_whole(builder: Builder, tmp_path: Path) -> None:
    out = tmp_path / "rootfs.tar"
    out.write_bytes(b"old")
    ctx = builder.context("FROM busybox-test:1\nCOPY a /a\n", {"a": "a\n"})
    builder.cli("build", "-o", f"type=tar,dest={out}", str(ctx))
    with tarfile.open(out) as tar:
        assert tar.extractfile("a").read() == b"a\n"  # type: ignore[union-attr]
    assert sorted(os.listdir(tmp_path)) == sorted(["rootfs.tar", "store", "ctx1"])


def test_tar_export_to_a_pipe(builder: Builder) -> None:
    """A destination that is not a regular file (here stdout, a pipe) is written in place."""
    ctx = builder.context("FROM busybox-test:1\nCOPY a /a\n", {"a": "a\n"})
    result = subprocess.run(CLOCHE + ["build", "--root", str(builder.root), "--progress",
                                      "quiet", "-o", "type=tar,dest=/dev/stdout", str(ctx)],
                            capture_output=True, timeout=180)
    assert result.returncode == 0, result.stderr
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
        assert tar.extractfile("a").read() == b"a\n"  # type: ignore[union-attr]


# --- 21: write errors name the file and the flag ---------------------------------------------


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Path:
    """A folder on a read-only mount (root writes through file modes, not through this)."""
    path = tmp_path / "ro"
    path.mkdir()
    (path / "meta.json").write_text("{}")
    return path


def _cli_in_ro_namespace(builder: Builder, ro: Path, *args: str) -> subprocess.CompletedProcess:
    """``cloche ARGS`` in a mount namespace of its own where ``ro`` is a read-only bind."""
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(ro),
            *CLOCHE, args[0], "--root", str(builder.root), *args[1:]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180)


def _named(result: subprocess.CompletedProcess, path: str, flag: str) -> None:
    assert result.returncode != 0
    err = result.stderr
    assert "error::" not in err, err
    assert path in err and flag in err, err
    assert "Traceback" not in err and "internal error" not in err, err


def test_iidfile_on_a_full_device(builder: Builder) -> None:
    ctx = builder.context("FROM busybox-test:1\n")
    result = builder.cli("build", "--iidfile", "/dev/full", str(ctx), check=False)
    _named(result, "/dev/full", "--iidfile")
    assert "No space left on device" in result.stderr


def test_metadata_file_on_a_read_only_file(builder: Builder, readonly_dir: Path) -> None:
    ctx = builder.context("FROM busybox-test:1\n")
    meta = readonly_dir / "meta.json"
    result = _cli_in_ro_namespace(builder, readonly_dir, "build", "--metadata-file", str(meta),
                                  str(ctx))
    _named(result, str(meta), "--metadata-file")
    assert "Read-only file system" in result.stderr
    assert meta.read_text() == "{}"


def test_metadata_file_in_a_missing_folder(builder: Builder, tmp_path: Path) -> None:
    ctx = builder.context("FROM busybox-test:1\n")
    meta = tmp_path / "no-such-dir" / "meta.json"
    result = builder.cli("build", "--metadata-file", str(meta), str(ctx), check=False)
    _named(result, str(meta), "--metadata-file")


@pytest.fixture
def full_device(tmp_path: Path) -> Path:
    """A node with /dev/full's numbers (writes fail with ENOSPC) at a path of the test's own,
    so that code which would rename a file over it cannot replace the host's /dev/full."""
    path = tmp_path / "full"
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    return path


@pytest.mark.parametrize("kind", ["tar", "oci", "docker"])
def test_output_dest_on_a_full_device(builder: Builder, full_device: Path, kind: str) -> None:
    """Written in place (a device is never replaced by a renamed file), and named."""
    before = os.lstat(full_device)
    ctx = builder.context("FROM busybox-test:1\n")
    result = builder.cli("build", "-o", f"type={kind},dest={full_device}", str(ctx),
                         check=False)
    _named(result, str(full_device), "--output")
    after = os.lstat(full_device)
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino
    assert [p.name for p in full_device.parent.iterdir() if p.name.startswith("full")] == ["full"]


@pytest.mark.parametrize("kind", ["tar", "local", "oci"])
def test_output_dest_read_only(builder: Builder, readonly_dir: Path, kind: str) -> None:
    ctx = builder.context("FROM busybox-test:1\n")
    dest = readonly_dir / ("out" if kind == "local" else "out.tar")
    result = _cli_in_ro_namespace(builder, readonly_dir, "build", "-o",
                                  f"type={kind},dest={dest}", str(ctx))
    _named(result, str(dest), "--output")
    assert "Read-only file system" in result.stderr


def test_save_to_a_read_only_folder_and_a_full_device(builder: Builder, readonly_dir: Path,
                                                      full_device: Path) -> None:
    out = readonly_dir / "image.tar"
    result = _cli_in_ro_namespace(builder, readonly_dir, "save", "busybox-test:1", "-o", str(out))
    _named(result, str(out), "-o")
    before = os.lstat(full_device)
    result = builder.cli("save", "busybox-test:1", "-o", str(full_device), check=False)
    _named(result, str(full_device), "-o")
    after = os.lstat(full_device)
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino
