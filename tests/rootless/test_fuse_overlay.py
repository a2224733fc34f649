"""fuse-overlayfs, the overlay where the kernel refuses overlayfs in the user namespace
(sandbox/overlay.py, docs/rootless.md): ``CLOCHE_OVERLAY=fuse`` forces it on this kernel,
which has overlayfs, so the fallback path runs for real; the layers must be those of the
kernel's overlay, and no daemon may outlive its step."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import stat
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloche.compression import Compression
from cloche.errors import SandboxError
from cloche.layers.diff import write_overlay_diff
from cloche.layers.unchanged import UNKNOWN, LowerView, find_unchanged
from cloche.oci.image import Image
from cloche.sandbox import linux, overlay
from cloche.store import Store
from tests.fixtures.rootfs import make_busybox_rootfs
from tests.fixtures.services import require_root, require_tool
from tests.rootless.conftest import USER, AsUser, as_user
from tests.rootless.test_rootless import DOCKERFILE, _config, _context, _listing

# the root filesystem's type, as the RUN step sees it (printed in the build's output)
SHOW_ROOT = "RUN grep ' / / ' /proc/self/mountinfo | sed 's/.* - /root-fs: /'\n"




def _daemons(uid: int) -> list[int]:
    """The fuse-overlayfs processes running as ``uid`` on the host."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm") as f:
                comm = f.read().strip()
            owner = os.stat(f"/proc/{entry.name}").st_uid
        except OSError:
            continue
        if comm == "fuse-overlayfs" and owner == uid:
            found.append(int(entry.name))
    return found


def _wait_until(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@pytest.fixture(scope="module")
def pair(user: AsUser, workdir: Path) -> tuple[Image, Image, AsUser, str, str]:
    """The rootless test's Dockerfile built as the user twice, each in its own store: with the
    kernel's overlayfs and with fuse-overlayfs."""
    require_tool("fuse-overlayfs", "apt-get install fuse-overlayfs")
    base = workdir / "fuse"
    base.mkdir(exist_ok=True)
    os.chmod(base, 0o755)
    rootfs = make_busybox_rootfs(base / "rootfs")
    os.chmod(base / "rootfs", 0o755)
    secret = base / "secret"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o644)
    ctx = _context(base, "ctx", DOCKERFILE + SHOW_ROOT)
    images, outputs = [], []
    for driver in ("kernel", "fuse"):
        folder = base / driver
        folder.mkdir(exist_ok=True)
        os.chmod(folder, 0o755)
        who = as_user(USER, folder)
        env = {"CLOCHE_OVERLAY": driver}
        who.run("import", str(rootfs), "base", extra_env=env)
        done = who.run("build", "--progress", "plain", "--secret", f"id=s,src={secret}",
                       "-t", "out", str(ctx), extra_env=env)
        images.append(Store.open(who.store).image("out"))
        outputs.append(done.stdout + done.stderr)
    return images[0], images[1], as_user(USER, base / "fuse"), outputs[0], outputs[1]


def test_a_fuse_overlayfs_build_makes_the_kernel_overlays_layers(
        pair: tuple[Image, Image, AsUser, str, str]) -> None:
    kernel, fuse, user, kernel_out, fuse_out = pair
    assert "root-fs: overlay " in kernel_out
    assert "root-fs: fuse.fuse-overlayfs " in fuse_out  # the steps really ran on it
    assert "refused overlayfs" not in fuse_out  # forced, not a fallback: no warning
    assert _listing(fuse) == _listing(kernel)
    assert _config(fuse) == _config(kernel)
    owners = {e[0]: (e[3], e[4], e[2]) for layer in _listing(fuse) for e in layer}
    assert owners["data/f"] == (1000, 50, 0o4750)  # chown in RUN, through the daemon
    assert "home/.wh.app" in owners and "bin/.wh.wc" in owners  # /home made again (BuildKit's differ)
    assert not any(name.endswith((".wh..wh..wh..opq", ".wh..wh..opq/")) for name in owners)
    assert not _daemons(user.uid)


def test_fuse_snapshots_are_left_in_the_kernels_notation(
        pair: tuple[Image, Image, AsUser, str, str]) -> None:
    """After each step the upper directory is rewritten as the kernel writes it, so a later
    build with the kernel's overlay may stack on it: no ``.wh.`` files are left."""
    user = pair[2]
    steps = user.store / "snapshots" / "steps"
    found = subprocess.run(["find", str(steps), "-name", ".wh.*"], capture_output=True,
                           text=True, check=True).stdout
    assert found == ""
    homes = [p for p in steps.glob("*/upper/home") if p.is_dir()]
    assert homes and all(os.getxattr(p, "user.overlay.opaque") == b"y" for p in homes)
    bins = [p / "wc" for p in steps.glob("*/upper/bin") if (p / "wc").exists()]
    assert bins and all(stat.S_ISCHR(os.lstat(p).st_mode) for p in bins)


def _fuse_user(workdir: Path, name: str) -> tuple[AsUser, Path]:
    """The user with a store of its own in ``fuse/name``, busybox imported as ``base``."""
    folder = workdir / "fuse"
    (folder / name).mkdir(parents=True, exist_ok=True)
    for d in (folder, folder / name):
        os.chmod(d, 0o755)
    who = as_user(USER, folder / name)
    rootfs = folder / "rootfs"
    if not rootfs.exists():
        make_busybox_rootfs(rootfs)
        os.chmod(rootfs, 0o755)
    who.run("import", str(rootfs), "base")
    return who, folder


def test_a_failing_step_leaves_no_daemon(user: AsUser, workdir: Path) -> None:
    who, folder = _fuse_user(workdir, "fail")
    ctx = _context(folder, "ctx-fail", "FROM base\nRUN touch /x && exit 3\n")
    done = who.run("build", str(ctx), check=False, extra_env={"CLOCHE_OVERLAY": "fuse"})
    assert done.returncode == 1, done.stderr
    assert "exit code: 3" in done.stderr, done.stderr
    assert not _daemons(who.uid)
    leftovers = subprocess.run(["grep", "-c", "fuse-overlayfs", "/proc/self/mountinfo"],
                               capture_output=True, text=True).stdout.strip()
    assert leftovers == "0"


def test_killing_cloche_ends_the_daemon(user: AsUser, workdir: Path) -> None:
    """kill -9 of the build: the daemon dies with the thread that started it (PDEATHSIG);
    otherwise it would hold its mount namespace, and so itself, alive for good."""
    who, folder = _fuse_user(workdir, "kill")
    env = {"CLOCHE_OVERLAY": "fuse"}
    ctx = _context(folder, "ctx-kill", "FROM base\nRUN --network=none sleep 60\n")
    before = set(_daemons(who.uid))
    cmd = ["runuser", "-u", who.user, "--", "env", "-i",
           *(f"{k}={v}" for k, v in dict(who.env, **env).items()), *who.argv, "build",
           str(ctx)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_until(lambda: bool(set(_daemons(who.uid)) - before), 60), \
            "no fuse-overlayfs daemon started"
        builders = [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()
                    and _cmdline(int(e.name)).count("cloche.cli.main")
                    and str(ctx) in _cmdline(int(e.name))
                    and os.stat(e.path).st_uid == who.uid]
        assert builders
        for pid in builders:
            os.kill(pid, signal.SIGKILL)
        assert _wait_until(lambda: not set(_daemons(who.uid)) - before, 20), \
            "fuse-overlayfs outlived cloche"
    finally:
        proc.kill()
        proc.wait()


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# -- the decision ----------------------------------------------------------------------------

def test_auto_falls_back_only_where_the_kernel_refuses_in_a_user_namespace() -> None:
    """The choice, with the errno values mount(2) gives where overlayfs is refused (making
    this kernel refuse for real is not possible from a test: it has overlayfs, and the
    refusal is a property of the kernel, not of a namespace)."""
    decide = overlay.decide
    for refused in (errno.EPERM, errno.EINVAL, errno.ENODEV):
        chosen = decide("auto", user_namespace=True, kernel_errno=refused, fuse=None)
        assert chosen == overlay.Driver("fuse", refused)
        name = errno.errorcode[refused]
        assert chosen.notice == (f"the kernel refused overlayfs in the user namespace "
                                 f"({name}); using fuse-overlayfs (slower)")
        with pytest.raises(SandboxError, match=rf"the kernel refused overlayfs in the user "
                           rf"namespace \({name}\), and fuse-overlayfs is not installed") as e:
            decide("auto", user_namespace=True, kernel_errno=refused,
                   fuse="fuse-overlayfs is not installed")
        assert "apt-get install fuse-overlayfs" in str(e.value.hint)
        assert "--isolation=chroot" in str(e.value.hint)
    # the kernel mounts it, or the host's root, or another error: the kernel's overlayfs
    assert decide("auto", user_namespace=True, kernel_errno=None, fuse=None).name == "kernel"
    assert decide("auto", user_namespace=False, kernel_errno=errno.EPERM,
                  fuse=None).name == "kernel"
    assert decide("auto", user_namespace=True, kernel_errno=errno.ENOSPC,
                  fuse=None).name == "kernel"
    assert decide("kernel", user_namespace=True, kernel_errno=errno.EPERM,
                  fuse=None).name == "kernel"
    forced = decide("fuse", user_namespace=False, kernel_errno=None, fuse=None)
    assert forced == overlay.Driver("fuse") and forced.notice is None
    with pytest.raises(SandboxError, match="CLOCHE_OVERLAY=fuse, but fuse-overlayfs needs "
                       "/dev/fuse, which this user cannot open") as e:
        decide("fuse", user_namespace=True, kernel_errno=None,
               fuse="fuse-overlayfs needs /dev/fuse, which this user cannot open (mode 0600)")
    assert "chmod 0666 /dev/fuse" in str(e.value.hint)


def test_an_unknown_overlay_choice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOCHE_OVERLAY", "zfs")
    with pytest.raises(SandboxError, match=r"\$CLOCHE_OVERLAY='zfs': want one of auto, "
                       "kernel, fuse"):
        overlay.requested_driver()
    monkeypatch.setenv("CLOCHE_OVERLAY", "")
    assert overlay.requested_driver() == "auto"


# -- fuse-overlayfs' own notation, read by the layer diff ------------------------------------

# the same changes, made on a fuse-overlayfs or a kernel overlay in a user namespace (as the
# user, uid 0 inside), on a lower tree of the user's files
CHANGES = ("rm -rf m/d && mkdir m/d && echo new > m/d/new && rm m/keep/x && echo y > m/keep/y "
           "&& cp -p m/keep/same m/keep/same.tmp && mv m/keep/same.tmp m/keep/same "
           "&& touch m/gone-new && rm m/gone-new && mkdir m/fresh && echo f > m/fresh/f")
MOUNTS = {
    "fuse": "fuse-overlayfs -o lowerdir=$PWD/lower,upperdir=$PWD/upper,workdir=$PWD/work m",
    "kernel": "mount -t overlay overlay -o lowerdir=$PWD/lower,upperdir=$PWD/upper,"
              "workdir=$PWD/work,userxattr,index=off,redirect_dir=nofollow,metacopy=off m",
}


def _upper_by(how: str, where: Path, uid: int, env: str = "") -> Path:
    """An upper directory made by ``how`` (fuse or kernel) with CHANGES over a fresh lower."""
    where.mkdir(parents=True)
    lower = where / "lower"
    for d in ("lower/d/sub", "lower/keep", "upper", "work", "m"):
        (where / d).mkdir(parents=True)
    (lower / "d" / "sub" / "f").write_text("old\n")
    (lower / "keep" / "x").write_text("x\n")
    (lower / "keep" / "same").write_text("same\n")
    os.utime(lower / "keep" / "same", (1000, 1000))
    subprocess.run(["chown", "-R", f"{uid}:{uid}", str(where)], check=True)
    script = (f"cd {where} && {env} {MOUNTS[how]} && {CHANGES}; s=$?; umount m; "
              "while pgrep -u 0 -x fuse-overlayfs >/dev/null 2>&1; do sleep 0.05; done; "
              "exit $s")
    done = subprocess.run(["runuser", "-u", USER, "--", "unshare", "-rm", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return where / "upper"


def _entries(upper: Path, lower: Path) -> list[tuple[object, ...]]:
    sink = _Sink()
    write_overlay_diff(upper, sink, Compression.NONE, unchanged=find_unchanged(upper, [lower]))
    import io

    out = []
    with tarfile.open(fileobj=io.BytesIO(sink.data), mode="r:") as t:
        for m in t:
            data = t.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
            out.append((m.name, m.type, m.mode, m.uid, m.gid, hashlib.sha256(data).hexdigest(),
                        tuple(sorted(m.pax_headers))))
    return out


class _Sink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


@pytest.fixture(scope="module")
def uppers(user: AsUser, workdir: Path) -> Iterator[dict[str, Path]]:
    require_tool("fuse-overlayfs", "apt-get install fuse-overlayfs")
    base = workdir / "uppers"
    made = {"kernel": _upper_by("kernel", base / "kernel", user.uid),
            "fuse": _upper_by("fuse", base / "fuse", user.uid),
            # where it may not make 0/0 devices: .wh.NAME files
            "fuse-wh": _upper_by("fuse", base / "fuse-wh", user.uid,
                                 "FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT=1")}
    yield made


def test_fuse_overlayfs_writes_its_own_notation(uppers: dict[str, Path]) -> None:
    """What the readers must understand (fuse-overlayfs 1.10 in a user namespace)."""
    fuse, wh = uppers["fuse"], uppers["fuse-wh"]
    for upper in (fuse, wh):
        assert os.getxattr(upper / "d", "user.fuseoverlayfs.opaque") == b"y"
        assert (upper / "d" / ".wh..wh..opq").is_file()
    assert stat.S_ISCHR(os.lstat(fuse / "keep" / "x").st_mode)
    assert (wh / "keep" / ".wh.x").is_file() and not os.path.lexists(wh / "keep" / "x")


def test_the_layer_diff_reads_fuse_overlayfs_uppers(uppers: dict[str, Path]) -> None:
    """The same changes give the same layer entries (whiteouts, opaque marker, unchanged files
    left out) from fuse-overlayfs' upper directory, in both its forms, as from the kernel's."""
    lower = uppers["kernel"].parent / "lower"
    expected = _entries(uppers["kernel"], lower)
    names = [e[0] for e in expected]
    # d made again: compared with the lower d (BuildKit's differ), not written opaque
    assert "d/.wh.sub" in names and "d/.wh..wh..opq" not in names
    assert "keep/.wh.x" in names and "keep/same" not in names
    for form in ("fuse", "fuse-wh"):
        got = _entries(uppers[form], uppers[form].parent / "lower")
        # mtimes differ (not compared); the rest, entry by entry
        assert got == expected, form


def test_a_fuse_overlayfs_upper_hides_what_it_deleted_as_a_lower(
        uppers: dict[str, Path]) -> None:
    """Stacked as a lower layer (the next step's), fuse-overlayfs' whiteouts and opaque
    directories hide what they hide in the kernel's notation."""
    for form in ("kernel", "fuse", "fuse-wh"):
        upper = uppers[form]
        view = LowerView([upper, upper.parent / "lower"])
        assert view.lookup("keep/x") is None, form
        assert view.lookup("d/sub") is None and view.lookup("d/sub/f") is None, form
        found = view.lookup("d/new")
        assert found is not None and found is not UNKNOWN, form
        assert view.lookup("keep/same") not in (None, UNKNOWN), form


# -- the rewrite into the kernel's notation, and the kernel stacking on it -------------------

def _in_mount_namespace(fn: Callable[[], None]) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            linux.unshare(linux.CLONE_NEWNS)
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
            fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("dev_whiteouts", [True, False])
def test_a_fuse_step_leaves_an_upper_the_kernel_can_stack_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dev_whiteouts: bool) -> None:
    require_root()
    require_tool("fuse-overlayfs", "apt-get install fuse-overlayfs")
    monkeypatch.setenv("CLOCHE_OVERLAY", "fuse")
    if not dev_whiteouts:
        monkeypatch.setenv("FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT", "1")
    monkeypatch.setattr(overlay, "_chosen", [])  # chosen again for this environment
    lower = tmp_path / "lower"
    (lower / "d" / "sub").mkdir(parents=True)
    (lower / "d" / "sub" / "f").write_text("old\n")
    (lower / "keep").mkdir()
    (lower / "keep" / "x").write_text("x\n")
    dirs = {n: tmp_path / n for n in ("upper", "work", "merged", "upper2", "work2", "merged2")}
    for d in dirs.values():
        d.mkdir()
    seen: dict[str, object] = {}

    def steps() -> None:
        with overlay.mount_overlay([lower], dirs["upper"], dirs["work"], dirs["merged"]) as m:
            seen["fs"] = _fstype(m)
            subprocess.run(["sh", "-c", "rm -rf d && mkdir d && touch d/new && rm keep/x"],
                           cwd=m, check=True)
        seen["daemons"] = _daemons(0)
        monkeypatch.setenv("CLOCHE_OVERLAY", "kernel")
        monkeypatch.setattr(overlay, "_chosen", [])
        with overlay.mount_overlay([dirs["upper"], lower], dirs["upper2"], dirs["work2"],
                                   dirs["merged2"]) as m:
            seen["fs2"] = _fstype(m)
            seen["d"] = sorted(os.listdir(m / "d"))
            seen["keep"] = sorted(os.listdir(m / "keep"))

    _in_mount_namespace(steps)
    assert seen["fs"] == "fuse.fuse-overlayfs" and seen["fs2"] == "overlay"
    assert seen["daemons"] == []
    assert seen["d"] == ["new"] and seen["keep"] == []
    upper = dirs["upper"]
    assert os.getxattr(upper / "d", "trusted.overlay.opaque") == b"y"
    assert "user.fuseoverlayfs.opaque" not in os.listxattr(upper / "d")
    assert sorted(os.listdir(upper / "d")) == ["new"]
    assert sorted(os.listdir(upper / "keep")) == ["x"]
    assert stat.S_ISCHR(os.lstat(upper / "keep" / "x").st_mode)


def _fstype(path: Path) -> str:
    with open("/proc/thread-self/mountinfo") as f:  # the calling thread's mount namespace
        for line in f:
            fields = line.split()
            if fields[4] == str(path):
                return fields[fields.index("-") + 1]
    return ""
