"""Mount points of a RUN step stay inside its root (issue 9, items 2, 3 and 11).

Every attack runs for real: a Dockerfile built by the engine, or a step in the sandbox over a
real overlay, with host-side marker files and folders that must stay as they were.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cloche.engine.options import SecretSpec
from cloche.errors import BuildError, ClocheError, DockerfileError, SandboxError
from cloche.sandbox.spec import Mount
from tests.engine.conftest import BASE, Builder
from tests.sandbox.conftest import Layer

MOUNT_KINDS = {
    "tmpfs": "type=tmpfs,target={target}",
    "cache": "type=cache,target={target}",
    "secret": "type=secret,id=tok,target={target}",
}


def _build(builder: Builder, dockerfile: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    builder.build(dockerfile, secrets=(SecretSpec(id="tok", src=str(secret)),))


# -- item 2: mount targets under /proc, /sys, /dev ------------------------------------------


@pytest.mark.parametrize("kind", list(MOUNT_KINDS))
def test_mount_target_through_proc_is_refused_at_its_line(builder: Builder, tmp_path: Path,
                                                          kind: str) -> None:
    """``/proc/1/root/...`` is the host's root before the pivot: nothing may be made there."""
    host = tmp_path / "host-side"
    spec = MOUNT_KINDS[kind].format(target=f"/proc/1/root{host}/made")
    dockerfile = f"FROM {BASE}\nRUN echo before\nRUN --mount={spec} true\n"
    with pytest.raises(DockerfileError) as err:
        _build(builder, dockerfile, tmp_path)
    assert err.value.line == 3
    assert "/proc" in err.value.message
    assert not host.exists()


@pytest.mark.parametrize("target", ["/sys/kernel/x", "/dev/shm", "/dev", "/proc"])
def test_mount_targets_on_kernel_filesystems_are_refused(builder: Builder, tmp_path: Path,
                                                         target: str) -> None:
    dockerfile = f"FROM {BASE}\nRUN --mount=type=tmpfs,target={target} true\n"
    with pytest.raises(DockerfileError) as err:
        builder.build(dockerfile)
    assert err.value.line == 2 and target.split("/")[1] in err.value.message


def test_relative_target_below_a_kernel_workdir_is_refused(builder: Builder,
                                                           tmp_path: Path) -> None:
    """Known only at dispatch (WORKDIR + relative target): refused there, located too."""
    host = tmp_path / "host-side"
    dockerfile = (f"FROM {BASE}\nWORKDIR /proc/1/root{host}\n"
                  "RUN --mount=type=tmpfs,target=made true\n")
    with pytest.raises(ClocheError) as err:
        builder.build(dockerfile)
    assert getattr(err.value, "line", None) == 3
    assert not (host / "made").exists()


def test_secret_id_cannot_climb_into_proc(builder: Builder, tmp_path: Path) -> None:
    """The default secret target is /run/secrets/ID; an ID with ``..`` must not reach /proc."""
    host = tmp_path / "host-side"
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    dockerfile = (f"FROM {BASE}\n"
                  f"RUN --mount=type=secret,id=../../proc/1/root{host}/made true\n")
    with pytest.raises(ClocheError):
        builder.build(dockerfile, secrets=(SecretSpec(id=f"../../proc/1/root{host}/made",
                                                      src=str(secret)),))
    assert not host.exists()


@pytest.mark.parametrize("kind", list(MOUNT_KINDS))
def test_symlink_into_proc_cannot_lead_a_mount_point_out(builder: Builder, tmp_path: Path,
                                                         kind: str) -> None:
    """A symlink planted by an earlier step that goes through /proc/1/root: the mount point
    is resolved inside the root by a no-follow walk, never by a path string."""
    host = tmp_path / "host-side"
    spec = MOUNT_KINDS[kind].format(target="/lnk/made")
    dockerfile = (f"FROM {BASE}\nRUN ln -s /proc/1/root{host} /lnk\n"
                  f"RUN --mount={spec} true\n")
    with pytest.raises((BuildError, SandboxError)):
        _build(builder, dockerfile, tmp_path)
    assert not host.exists()


def test_mount_below_a_mount_is_made_on_the_upper_mount(layer: Layer, tmp_path: Path) -> None:
    """A target below another mount is created in that mount (here a tmpfs) and so leaves
    nothing in the layer; the heredoc script under /dev/pipes works the same way."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("data")
    step = layer.run("cat /t/inner/f && ls /t",
                     mounts=(Mount(target="/t", kind="tmpfs"),
                             Mount(target="/t/inner", source=src, readonly=True)))
    assert step.result.ok, step.err
    assert step.text == "datainner\n"
    assert not any(e.startswith("t") for e in layer.upper_entries())


# -- item 3: the clean-up of mount points ---------------------------------------------------


def _host_marker(tmp_path: Path, dirs: tuple[str, ...], files: tuple[str, ...]) -> Path:
    host = tmp_path / "host-marker"
    for d in dirs:
        (host / d).mkdir(parents=True)
    for f in files:
        (host / f).parent.mkdir(parents=True, exist_ok=True)
        (host / f).touch()
    return host


def _survives(host: Path, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if not os.path.lexists(host / n)]


def test_cleanup_of_extra_mount_points_ignores_planted_symlinks(layer: Layer,
                                                                tmp_path: Path) -> None:
    host = _host_marker(tmp_path, ("b/c", "b/d"), ("b/f",))
    (tmp_path / "source").write_text("source")
    mounts = (Mount(target="/a/b/c", kind="tmpfs"), Mount(target="/a/b/d", kind="tmpfs"),
              Mount(target="/a/b/f", source=tmp_path / "source"))
    step = layer.run(f"mv /a /a.moved && ln -s {host} /a", mounts=mounts)
    assert step.result.ok, step.err
    assert _survives(host, ("b", "b/c", "b/d", "b/f")) == []


def test_cleanup_of_etc_stubs_ignores_planted_symlinks(scratch_layer: Layer,
                                                       tmp_path: Path) -> None:
    """A scratch-like rootfs has no /etc: the sandbox makes /etc, /etc/hosts and
    /etc/resolv.conf; the step swaps /etc for a link to a host folder holding empty ones."""
    host = _host_marker(tmp_path, (), ("hosts", "resolv.conf"))
    step = scratch_layer.run(f"mv /etc /etc.moved && ln -s {host} /etc")
    assert step.result.ok, step.err
    assert _survives(host, ("hosts", "resolv.conf")) == []


def test_cleanup_of_proc_dev_sys_stubs_ignores_planted_symlinks(scratch_layer: Layer,
                                                                tmp_path: Path) -> None:
    """/proc, /dev and /sys are links to /x/... in the image: the stubs are made below /x,
    then the step swaps /x for a link to a host folder holding empty proc, dev and sys."""
    host = _host_marker(tmp_path, ("proc", "dev", "sys"), ())
    for name in ("proc", "dev", "sys"):
        os.symlink(f"/x/{name}", scratch_layer.merged / name)
    step = scratch_layer.run(f"mv /x /x.moved && ln -s {host} /x")
    assert step.result.ok, step.err
    assert _survives(host, ("proc", "dev", "sys")) == []


def test_stubs_still_vanish_from_the_layer(scratch_layer: Layer) -> None:
    """The normal case: the mount points made for a step leave no trace in its layer (but
    /proc, /dev and /sys, which stay as with BuildKit)."""
    step = scratch_layer.run("echo hi > /out", mounts=(Mount(target="/m/n", kind="tmpfs"),))
    assert step.result.ok, step.err
    assert scratch_layer.upper_entries() == ["dev", "out", "proc", "sys"]


# -- item 11: read-only binds are read-only all the way down --------------------------------


def test_readonly_context_bind_makes_its_submounts_readonly(builder: Builder,
                                                            tmp_path: Path) -> None:
    """A folder of the context that is a mount point of its own (a tmpfs here): the default
    read-only bind of the context must not let the step write into it."""
    ctx = builder.context(None, {"sub/keep": "x"})
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(ctx / "sub")], check=True)
    try:
        (ctx / "Dockerfile").write_text(
            f"FROM {BASE}\nRUN --mount=type=bind,target=/ctx touch /ctx/sub/written\n")
        from cloche import api
        from cloche.engine.options import BuildOptions
        with pytest.raises(BuildError):
            api.build(BuildOptions(context=str(ctx), root=builder.root))
        assert not (ctx / "sub" / "written").exists()
    finally:
        subprocess.run(["umount", "-l", str(ctx / "sub")], check=True)


def test_readonly_bind_of_a_stage_is_readonly_below(layer: Layer, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src / "sub")], check=True)
    try:
        step = layer.run("touch /src/sub/w; echo $?; touch /src/w; echo $?",
                         mounts=(Mount(target="/src", source=src, readonly=True),))
        assert step.result.ok, step.err
        assert step.text.split() == ["1", "1"]
        assert not (src / "sub" / "w").exists() and not (src / "w").exists()
    finally:
        subprocess.run(["umount", "-l", str(src / "sub")], check=True)


FALLBACK = textwrap.dedent("""
    import os, sys
    from cloche.sandbox import linux, mountat
    base = sys.argv[1]
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    src, dst = os.path.join(base, "src"), os.path.join(base, "dst")
    os.makedirs(os.path.join(src, "sub")); os.mkdir(dst)
    linux.mount("tmpfs", os.path.join(src, "sub"), "tmpfs")
    fd = os.open(dst, os.O_PATH | os.O_DIRECTORY)
    mountat.bind_classic(src, fd, mountat.MOUNT_ATTR_RDONLY)
    for path in (os.path.join(dst, "w"), os.path.join(dst, "sub", "w")):
        try:
            open(path, "w").close()
            print("written", path)
        except OSError as e:
            print(e.strerror)
""")


def test_readonly_bind_fallback_remounts_every_submount(tmp_path: Path) -> None:
    """Kernels without mount_setattr(2) (before 5.12): each submount is remounted read-only."""
    from tests.fixtures.services import require_root
    require_root()
    src_dir = str(Path(__file__).resolve().parents[2] / "src")
    done = subprocess.run([sys.executable, "-c", FALLBACK, str(tmp_path)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": src_dir}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["Read-only file system"] * 2
