"""Issue 9, item 8: a build stopped during a secret step leaves the secret nowhere on the host.

The attack is the ordinary life of a CI job: the runner cancels the job (SIGTERM, or SIGHUP
when its terminal goes) or the machine's supervisor kills it (kill -9) while a step that
mounts a secret runs. Before the fix the plaintext stayed in ``/dev/shm/cloche-secret-*``
for good, and ``cloche prune --all`` did not remove it. Each test runs the real CLI in a
subprocess, kills it while the secret step runs, and then searches the host's shared memory,
the store and $TMPDIR for the secret's value, byte for byte.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.engine.conftest import BASE, CLOCHE, Builder
from tests.security.procs import pids_of

HOLDER_PREFIX = "cloche-secret-"  # where cloche up to issue 9 put a step's secret


def _holding(value: bytes, *roots: Path) -> list[str]:
    """Files under ``roots`` (no link followed, devices and FIFOs skipped) holding ``value``."""
    argv = ["grep", "-rlF", "--devices=skip", "-e", value.decode(), *map(str, roots)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    # 1: nothing found; 2: an error, allowed only for files that went away while grep ran
    # (other tests use $TMPDIR at the same time)
    errors = [line for line in result.stderr.splitlines()
              if not line.endswith("No such file or directory")]
    assert result.returncode in (0, 1) or (result.returncode == 2 and not errors), result
    return result.stdout.splitlines()


def _secret_build(builder: Builder, sleeper: str) -> tuple[subprocess.Popen[bytes], bytes]:
    """``cloche build`` of a step that holds a secret (from an environment variable, so the
    value is on no file to begin with) and sleeps; returns once the step runs."""
    value = f"s3cr3t-{uuid.uuid4().hex}".encode()
    ctx = builder.context(
        f"FROM {BASE}\n"
        f"RUN --mount=type=secret,id=tok,required=true [ -s /run/secrets/tok ] && {sleeper}\n")
    # a $TMPDIR of the build's own, searched whole afterwards: the machine's /tmp holds the
    # whole suite's trees (gigabytes), too much to read for each case
    tmpdir = builder.dir / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    env = dict(os.environ, CLOCHE_TEST_TOKEN=value.decode(), TMPDIR=str(tmpdir))
    argv = CLOCHE + ["build", "--root", str(builder.root), "--progress", "plain",
                     "--secret", "id=tok,env=CLOCHE_TEST_TOKEN", str(ctx)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not pids_of(sleeper):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the secret step never ran: {proc.communicate()}")
        time.sleep(0.1)
    return proc, value


def _sleeper() -> str:
    return f"sleep {4000 + uuid.uuid4().int % 999}"  # a command line no other test runs


def _assert_gone(builder: Builder, value: bytes, sleeper: str) -> None:
    deadline = time.monotonic() + 10
    while pids_of(sleeper) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pids_of(sleeper), "the secret step outlived the build"
    places = (Path("/dev/shm"), builder.root, builder.dir / "tmpdir")
    assert _holding(value, *places) == []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP],
                         ids=["kill-9", "SIGTERM", "SIGHUP"])
def test_a_killed_build_leaves_no_plaintext_secret(builder: Builder, sig: int) -> None:
    sleeper = _sleeper()
    proc, value = _secret_build(builder, sleeper)
    try:
        proc.send_signal(sig)
        proc.communicate(timeout=30)
        _assert_gone(builder, value, sleeper)
        builder.cli("prune", "--all", "--force")
        assert _holding(value, Path("/dev/shm"), builder.root) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_end_a_build_as_ctrl_c_does(builder: Builder, sig: int) -> None:
    """The same exit as Ctrl-C: status 130, the one line ``interrupted``, no traceback, and
    the step's processes killed (the build's cancel scope ran)."""
    sleeper = _sleeper()
    proc, value = _secret_build(builder, sleeper)
    try:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)  # a timeout only, not a speed claim
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = err.decode(errors="replace")
    assert proc.returncode == 130, text
    assert "Traceback" not in text
    assert text.rstrip().splitlines()[-1] == "interrupted", text
    _assert_gone(builder, value, sleeper)
    assert not list(builder.store.builds_dir.glob("build-*")), "the workspace was not cleaned"


def test_stale_secret_holders_are_swept_by_prune_and_by_a_build(builder: Builder) -> None:
    """Holders an earlier cloche left in /dev/shm (kill -9 during a secret step) are removed
    by ``cloche prune`` and by the next build."""
    planted = []
    for _ in range(2):
        holder = Path(tempfile.mkdtemp(prefix=HOLDER_PREFIX, dir="/dev/shm"))
        (holder / "secret").write_bytes(b"left-behind")
        planted.append(holder)
    try:
        builder.cli("prune", "--force")
        assert not planted[0].exists() and not planted[1].exists()
        holder = Path(tempfile.mkdtemp(prefix=HOLDER_PREFIX, dir="/dev/shm"))
        (holder / "secret").write_bytes(b"left-behind")
        planted.append(holder)
        builder.build(f"FROM {BASE}\nRUN true\n")
        assert not holder.exists()
    finally:
        for path in planted:
            if path.exists():
                (path / "secret").unlink(missing_ok=True)
                path.rmdir()
