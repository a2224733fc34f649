"""Issue 9, item 18: a RUN step cannot take the host down with processes or memory.

Before the fix a step forked 2,000 processes and filled 2 GB, and ``cloche build`` had no
``--pids-limit``, ``--memory``, ``--ulimit`` or ``--shm-size`` (the flags were unknown, exit
2, and a step ran in cloche's own cgroup with no limit). Each step now runs in a cgroup of its
own with a pids limit by default; the tests fork and allocate for real and read the limits
from the host's side of the cgroup file system.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from cloche.errors import BuildError
from tests.engine.conftest import BASE, CLOCHE, Builder, rootfs
from tests.security.procs import pids_of

T = TypeVar("T")

def _sleeper() -> str:
    return f"sleep {5000 + uuid.uuid4().int % 997}"  # a command line no other test runs


def _cgroup_mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, controllers) of the host's cgroup hierarchies."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        head, _, tail = line.partition(" - ")
        fstype, _, options = tail.split()[:3]
        point = head.split()[4]
        if fstype == "cgroup":
            out.append((point, fstype, set(options.split(","))))
        elif fstype == "cgroup2":
            out.append((point, fstype, set(Path(point, "cgroup.controllers").read_text().split())))
    return out


def _group_dir(pid: int, controller: str) -> Path:
    """The host directory of ``controller``'s cgroup of process ``pid``."""
    lines = [ln.split(":", 2) for ln in Path(f"/proc/{pid}/cgroup").read_text().splitlines()]
    for point, fstype, controllers in _cgroup_mounts():
        if controller not in controllers:
            continue
        for hid, names, path in lines:
            if (fstype == "cgroup" and controller in names.split(",")) \
                    or (fstype == "cgroup2" and hid == "0"):
                return Path(point + path)
    raise AssertionError(f"no {controller} cgroup for {pid}")


def _while_running(builder: Builder, dockerfile: str, *flags: str,
                   look: Callable[[int], T]) -> T:
    """Run a build whose step sleeps (``SLEEPER`` in ``dockerfile``); ``look(pid)`` of the
    sleeping process, from the host while the step runs; returns what it saw once the build
    has ended (successfully: the sleeper is stopped, the step's ``; true`` goes on)."""
    sleeper = _sleeper()
    ctx = builder.context(dockerfile.replace("SLEEPER", sleeper))
    argv = CLOCHE + ["build", "--root", str(builder.root), "--progress", "plain", *flags,
                     str(ctx)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not pids_of(sleeper):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        pid = pids_of(sleeper)[0]
        seen = look(pid)
        os.kill(pid, 15)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return seen


def _groups(pid: int) -> tuple[Path, Path]:
    return _group_dir(pid, "pids"), _group_dir(pid, "memory")


def test_every_step_gets_a_pids_limit_by_default_and_its_cgroup_goes(builder: Builder) -> None:
    pids, memory = _while_running(builder, f"FROM {BASE}\nRUN SLEEPER; true\n", look=_groups)
    assert pids.name.startswith("step-") and pids.parent.name.startswith("build-")
    assert not pids.exists() and not pids.parent.exists(), "the step's cgroup stayed"
    assert not memory.name.startswith("step-")  # no memory limit by default: no group


def test_the_limits_are_set_on_the_steps_cgroup(builder: Builder) -> None:
    def limits(pid: int) -> tuple[dict[str, str], Path, Path]:
        pids, memory = _groups(pid)
        seen = {"pids": (pids / "pids.max").read_text().strip()}
        for name in ("memory.max", "memory.limit_in_bytes"):
            if (memory / name).exists():
                seen["memory"] = (memory / name).read_text().strip()
        return seen, pids, memory

    seen, pids, memory = _while_running(builder, f"FROM {BASE}\nRUN SLEEPER; true\n",
                                        "--pids-limit", "321", "--memory", "96m", look=limits)
    assert seen == {"pids": "321", "memory": str(96 * 1024 * 1024)}
    assert not pids.exists() and not memory.exists()


def test_default_pids_limit_is_4096(builder: Builder) -> None:
    limit = _while_running(builder, f"FROM {BASE}\nRUN SLEEPER; true\n",
                           look=lambda pid: (_group_dir(pid, "pids") / "pids.max").read_text())
    assert limit.strip() == "4096"


def _host_processes() -> int:
    return sum(1 for name in os.listdir("/proc") if name.isdigit())


def test_forking_beyond_the_pids_limit_fails_the_step_cleanly(builder: Builder) -> None:
    before = _host_processes()
    sleeper = _sleeper()
    with pytest.raises(BuildError) as info:
        builder.build(f"FROM {BASE}\nRUN for i in $(seq 1 300); do {sleeper} & done; wait\n",
                      pids_limit=50)
    err = info.value
    assert err.line == 2 and "--pids-limit" in err.render(), err.render()
    assert "can't fork" in err.render() or "Resource temporarily unavailable" in err.render()
    time.sleep(0.5)
    assert pids_of(sleeper) == [], "processes of the step outlived it"
    assert _host_processes() < before + 50


def test_a_fork_bomb_is_held_at_the_limit_and_the_host_keeps_working(builder: Builder) -> None:
    """A real fork bomb under --pids-limit 200, watched for four seconds: the host's process
    count stays near where it was; then SIGTERM stops the build as Ctrl-C does, bomb and all.
    (Left to end by itself, the step's shell competes with 200 forking processes for the CPU:
    seconds alone, minutes on a busy machine.)"""
    before = _host_processes()
    peak = 0
    ctx = builder.context(f"FROM {BASE}\nRUN bomb() {{ bomb | bomb & }}; bomb; sleep 600\n")
    argv = CLOCHE + ["build", "--root", str(builder.root), "--progress", "plain",
                     "--pids-limit", "200", str(ctx)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        watch_until = time.monotonic() + 4
        while proc.poll() is None and time.monotonic() < watch_until:
            peak = max(peak, _host_processes())
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()  # still held, not crashed
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and b"interrupted" in err, err
    assert b"Traceback" not in err
    assert peak < before + 250, (before, peak)
    assert subprocess.run(["true"]).returncode == 0  # the host still forks
    deadline = time.monotonic() + 10
    while _host_processes() > before + 100 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _host_processes() < before + 100  # the bomb (200 processes) went with the build


def test_memory_limit_kills_an_allocating_step_with_a_clear_error(builder: Builder) -> None:
    ctx = builder.context(
        f"FROM {BASE}\nRUN echo start\n"
        "RUN x=$(head -c 400000000 /dev/zero | tr '\\0' a); echo ${#x}\n")
    result = builder.cli("build", "--progress", "plain", "--memory", "48m", str(ctx),
                         check=False)
    assert result.returncode == 1, result
    text = result.stderr
    assert "Traceback" not in text
    assert "Dockerfile:3" in text, text  # the step, by its line
    assert "out of memory" in text and "--memory limit of 48MiB" in text, text


def test_ulimit_and_shm_size_reach_the_step(builder: Builder, tmp_path: Path) -> None:
    image = builder.build(
        f"FROM {BASE}\nRUN ulimit -Sn > /soft && ulimit -Hn > /hard "
        "&& grep ' /dev/shm ' /proc/mounts > /shm && df -k /dev/shm | tail -1 > /df\n",
        ulimits=("nofile=1024:2048",), shm_size=128 * 1024 * 1024).image
    tree = rootfs(image, tmp_path / "tree")
    assert (tree / "soft").read_text().strip() == "1024"
    assert (tree / "hard").read_text().strip() == "2048"
    assert "size=131072k" in (tree / "shm").read_text()
    assert (tree / "df").read_text().split()[1] == "131072"


def test_cli_flags_reach_the_step(builder: Builder, tmp_path: Path) -> None:
    ctx = builder.context(f"FROM {BASE}\nRUN ulimit -Sn > /n && grep ' /dev/shm ' /proc/mounts "
                          "> /shm\n")
    out = tmp_path / "out"
    builder.cli("build", "--progress", "plain", "--ulimit", "nofile=777:888", "--shm-size",
                "32m", "-o", f"type=local,dest={out}", str(ctx))
    assert (out / "n").read_text().strip() == "777"
    assert "size=32768k" in (out / "shm").read_text()


@pytest.mark.parametrize("flag, value, message", [
    ("--ulimit", "nofiles=10", "unknown limit 'nofiles'"),
    ("--ulimit", "nofile=20:10", "above the hard limit"),
    ("--memory", "1m", "the minimum is 6MiB"),
    ("--memory", "lots", "want a size"),
    ("--shm-size", "0", "want a size above 0"),
])
def test_bad_limit_flags_are_refused_before_the_build(builder: Builder, flag: str, value: str,
                                                      message: str) -> None:
    ctx = builder.context(f"FROM {BASE}\nRUN echo step-ran\n")
    result = builder.cli("build", "--progress", "plain", flag, value, str(ctx), check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert flag in result.stderr and message in result.stderr, result.stderr
    assert "step-ran" not in result.stderr


def test_without_cgroups_only_an_explicit_limit_is_an_error(builder: Builder) -> None:
    """A host where cloche sees no cgroup hierarchy (here: a mount namespace with every
    cgroup file system unmounted): the default pids limit is skipped, --memory is an error
    naming the flag."""
    ctx = builder.context(f"FROM {BASE}\nRUN echo step-ran\n")
    cloche = " ".join(CLOCHE)

    def run(*flags: str) -> subprocess.CompletedProcess[str]:
        script = ("umount -R /sys/fs/cgroup 2>/dev/null || umount -l /sys/fs/cgroup; "
                  "! grep -q ' - cgroup' /proc/self/mountinfo || exit 99; "
                  f"exec {cloche} build --root {builder.root} --progress plain "
                  f"{' '.join(flags)} {ctx}")
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               script], capture_output=True, text=True, timeout=180)

    plain = run()
    assert plain.returncode == 0, plain.stderr
    asked = run("--memory", "64m")
    assert asked.returncode != 0 and "Traceback" not in asked.stderr, asked.stderr
    assert "--memory needs the cgroup memory controller" in asked.stderr, asked.stderr
    assert "step-ran" not in asked.stderr
