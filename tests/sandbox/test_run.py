"""RUN steps in the real sandbox: namespaces, mounts, users, output, cleanup."""

from __future__ import annotations

import os
import random
import signal
import socket
import stat
import threading
from pathlib import Path

import pytest

from cloche.errors import SandboxError
from cloche.fs.users import resolve_user
from cloche.sandbox import DEFAULT_PATH, Mount, RunSpec, run
from tests.sandbox.conftest import Layer


def _host_processes_with(needle: bytes) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def test_output_streams_and_exit_code(layer: Layer) -> None:
    step = layer.run("echo to-out; echo to-err >&2; exit 3")
    assert step.result.exit_code == 3 and not step.result.ok
    assert step.out == b"to-out\n"
    assert step.err == b"to-err\n"
    assert layer.run("true").result.ok


def test_exec_form_is_not_a_shell(layer: Layer) -> None:
    assert layer.run(("echo", "$HOME", "a  b")).out == b"$HOME a  b\n"  # found through PATH
    assert layer.run("echo $HOME").out == b"/root\n"


def test_missing_executable_is_127(layer: Layer) -> None:
    step = layer.run(("/no/such/program",))
    assert step.result.exit_code == 127
    assert b"/no/such/program" in step.err


def test_command_is_pid_1_and_ignores_unhandled_signals_like_buildkit(layer: Layer) -> None:
    step = layer.run("echo $$; kill -TERM $$; echo survived")
    assert step.out == b"1\nsurvived\n" and step.result.ok


def test_with_init_the_command_is_a_child_and_can_be_killed(layer: Layer) -> None:
    step = layer.run("echo $$; kill -TERM $$; echo not-reached", init=True)
    assert step.out == b"2\n"
    assert step.result.signal == signal.SIGTERM
    assert step.result.exit_code == 128 + signal.SIGTERM


def test_exact_environment_with_default_path(layer: Layer) -> None:
    env = sorted(layer.run(("env",), env=("A=1", "B=two words")).text.splitlines())
    assert env == ["A=1", "B=two words", "HOME=/root", f"PATH={DEFAULT_PATH}"]
    env = layer.run(("/bin/env",), env=("PATH=/bin", "HOME=/x")).text.splitlines()
    assert sorted(env) == ["HOME=/x", "PATH=/bin"]


def test_missing_cwd_is_created_and_kept(layer: Layer) -> None:
    step = layer.run("pwd", cwd="/srv/app")
    assert step.out == b"/srv/app\n"
    assert (layer.upper / "srv" / "app").is_dir()


def test_user_by_name_from_passwd(layer: Layer) -> None:
    user = resolve_user(layer.merged, "app")
    step = layer.run('id -u; id -g; id -G; echo $HOME; touch /home/app/mine; touch /root/no',
                     user=user)
    lines = step.text.splitlines()
    assert lines[:2] == ["1000", "1000"]
    assert set(lines[2].split()) == {"1000", "50"}
    assert lines[3] == "/home/app"
    assert step.result.exit_code != 0  # /root is not writable for app
    assert os.stat(layer.upper / "home" / "app" / "mine").st_uid == 1000


def test_hostname_and_etc_hosts(layer: Layer) -> None:
    host_name = socket.gethostname()
    step = layer.run("hostname; cat /etc/hosts", hostname="stepbox",
                     extra_hosts=(("db", "10.0.0.5"),))
    lines = step.text.splitlines()
    assert lines[0] == "stepbox"
    assert lines[1:] == ["127.0.0.1\tlocalhost stepbox",
                         "::1\tlocalhost ip6-localhost ip6-loopback", "10.0.0.5\tdb"]
    assert socket.gethostname() == host_name
    assert not (layer.upper / "etc" / "hosts").exists()
    assert "hosts" not in os.listdir(layer.lower / "etc")


@pytest.mark.parametrize("init", [False, True])
def test_pid_namespace_hides_host_processes(layer: Layer, init: bool) -> None:
    step = layer.run("ps -o pid,args", init=init)
    pids = [int(line.split()[0]) for line in step.text.splitlines()[1:]]
    assert 1 in pids and max(pids) < 10
    assert "pytest" not in step.text


def test_network_none_has_only_loopback_up(layer: Layer) -> None:
    step = layer.run("ls /sys/class/net; cat /sys/class/net/lo/flags", network="none")
    names, flags = step.text.split()[:-1], step.text.split()[-1]
    assert names == ["lo"]
    assert int(flags, 16) & 0x1  # IFF_UP


def test_default_network_is_a_namespace_of_its_own(layer: Layer) -> None:
    step = layer.run("ls /sys/class/net")  # slirp4netns's tap (tests/security/test_network.py)
    assert sorted(step.text.split()) == ["lo", "tap0"]


def test_host_network_is_the_hosts(layer: Layer) -> None:
    step = layer.run("ls /sys/class/net", network="host")  # the engine asks for --allow first
    assert sorted(step.text.split()) == sorted(os.listdir("/sys/class/net"))


@pytest.mark.parametrize("init", [False, True])
def test_background_children_do_not_survive(layer: Layer, init: bool) -> None:
    n = str(random.randint(10**6, 10**7)).encode()
    step = layer.run(f"sleep {n.decode()} & sleep {n.decode()} & echo started", init=init)
    assert step.out == b"started\n"
    assert _host_processes_with(b"sleep\0" + n) == []


@pytest.mark.parametrize("init,user", [(False, "root"), (True, "root"), (False, "app")])
def test_timeout_kills_the_whole_step(layer: Layer, init: bool, user: str) -> None:
    n = str(random.randint(10**6, 10**7))
    step = layer.run(f"sleep {n} & sleep {n}", timeout=0.5, init=init,
                     user=resolve_user(layer.merged, user))
    assert step.result.timed_out and not step.result.ok
    assert _host_processes_with(b"sleep\0" + n.encode()) == []


def test_ctrl_c_in_the_caller_kills_the_step(layer: Layer) -> None:
    n = str(random.randint(10**6, 10**7))
    ready = threading.Event()

    def on_output(chunk: bytes) -> None:
        if b"ready" in chunk:
            ready.set()

    def interrupt() -> None:
        ready.wait()
        os.kill(os.getpid(), signal.SIGINT)

    killer = threading.Thread(target=interrupt)
    killer.start()
    with pytest.raises(KeyboardInterrupt):
        run(RunSpec(layer.merged, ("/bin/sh", "-c", f"sleep {n} & echo ready; sleep {n}"),
                    stdout=on_output))
    killer.join()
    assert _host_processes_with(b"sleep\0" + n.encode()) == []


def test_one_callback_for_both_streams_gets_them_in_the_order_written(layer: Layer) -> None:
    """The engine passes one sink for stdout and stderr: it reads one pipe, so the output is
    in the order the step wrote it (two pipes read by two threads lost it; issue 11)."""
    chunks: list[bytes] = []
    script = "; ".join(f"echo o{i}; echo e{i} >&2" for i in range(50))
    result = run(RunSpec(layer.merged, ("/bin/sh", "-c", script + "; echo last >&2"),
                         stdout=chunks.append, stderr=chunks.append))
    assert result.ok
    expected = [f"{k}{i}".encode() for i in range(50) for k in "oe"] + [b"last"]
    assert b"".join(chunks).splitlines() == expected


def test_two_callbacks_still_get_their_own_stream(layer: Layer) -> None:
    step = layer.run("echo a; echo b >&2; echo c")
    assert (step.out, step.err) == (b"a\nc\n", b"b\n")


def test_output_to_a_file_descriptor(layer: Layer, tmp_path: Path) -> None:
    with open(tmp_path / "log", "wb") as log:
        result = run(RunSpec(layer.merged, ("/bin/sh", "-c", "echo a; echo b >&2"),
                             stdout=log.fileno(), stderr=log.fileno()))
    assert result.ok
    assert sorted((tmp_path / "log").read_bytes().splitlines()) == [b"a", b"b"]


def test_writes_land_in_upper_and_deletions_are_whiteouts(layer: Layer) -> None:
    step = layer.run("echo hello > /tmp/new.txt && rm /bin/true && mkdir -p /opt/x")
    assert step.result.ok, step.err
    assert (layer.upper / "tmp" / "new.txt").read_text() == "hello\n"
    whiteout = os.lstat(layer.upper / "bin" / "true")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert (layer.upper / "opt" / "x").is_dir()
    assert (layer.lower / "bin" / "true").is_symlink()  # the lower layer is untouched


def test_mount_stubs_leave_only_proc_dev_sys_in_upper(scratch_layer: Layer,
                                                      tmp_path: Path) -> None:
    """The stubs of /etc/hosts, /etc/resolv.conf and the mounts go (their parents too, as
    with current BuildKit's recursive clean-up); /proc, /dev and /sys stay, empty, 0755
    root, as runc leaves them in a BuildKit step's layer (issue 11, divergence 1)."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    step = scratch_layer.run(
        "cat /run/secrets/token; ls /proc/self/ >/dev/null && echo proc-ok",
        mounts=(Mount("/run/secrets/token", source=secret, readonly=True),
                Mount("/var/cache/apt", kind="tmpfs", size=1 << 20)))
    assert step.result.ok, step.err
    assert step.out == b"s3cretproc-ok\n"
    assert scratch_layer.upper_entries() == ["dev", "proc", "sys"]
    for name in ("dev", "proc", "sys"):
        st = os.lstat(scratch_layer.upper / name)
        assert (stat.S_ISDIR(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (
            True, 0o755, 0, 0)
    assert set(step.result.stubs) >= {"/etc", "/etc/hosts",
                                      "/etc/resolv.conf", "/run", "/run/secrets",
                                      "/run/secrets/token", "/var", "/var/cache",
                                      "/var/cache/apt"}
    assert not {"/proc", "/dev", "/sys"} & set(step.result.stubs)


def test_stub_parents_with_real_content_are_kept(scratch_layer: Layer) -> None:
    step = scratch_layer.run("echo x > /etc/motd")
    assert step.result.ok, step.err
    assert scratch_layer.upper_entries() == ["dev", "etc", "etc/motd", "proc", "sys"]
    assert "/etc/hosts" in step.result.stubs and "/etc" not in step.result.stubs


def test_copied_up_parent_keeps_its_times(layer: Layer) -> None:
    assert layer.run("true").result.ok
    # /etc was copied up to hold the /etc/hosts stub; it is empty and looks like the lower one.
    assert layer.upper_entries() in ([], ["etc"])
    if (layer.upper / "etc").exists():
        assert os.stat(layer.upper / "etc").st_mtime_ns == os.stat(layer.lower / "etc").st_mtime_ns


def test_bind_mounts_read_only_and_read_write(layer: Layer, tmp_path: Path) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "in.txt").write_text("input")
    step = layer.run("cat /src/in.txt; echo out > /cache/out.txt; touch /src/nope",
                     mounts=(Mount("/src", source=ro, readonly=True),
                             Mount("/cache", source=rw)))
    assert step.out == b"input"
    assert step.result.exit_code != 0 and b"Read-only" in step.err
    assert (rw / "out.txt").read_text() == "out\n"
    assert not (ro / "nope").exists()
    assert layer.upper_entries() in ([], ["etc"])


def test_tmpfs_mount_is_not_in_the_layer(layer: Layer) -> None:
    step = layer.run("echo x > /tmp/cache/f && cat /tmp/cache/f",
                     mounts=(Mount("/tmp/cache", kind="tmpfs"),))
    assert step.out == b"x\n"
    assert not (layer.upper / "tmp" / "cache").exists()


def test_dev_and_proc_inside(layer: Layer) -> None:
    step = layer.run("ls /dev; head -c 4 /dev/zero | wc -c; echo x > /dev/null; "
                     "ls -d /dev/pts/ptmx /dev/shm; cat /proc/1/cmdline | tr '\\0' ' '")
    assert step.result.ok, step.err
    names = set(step.text.split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "shm", "pts", "ptmx",
            "fd", "stdin", "stdout", "stderr"} <= names
    assert "4" in names


def test_sys_is_read_only(layer: Layer) -> None:
    step = layer.run("echo 1 > /sys/kernel/profiling")
    assert step.result.exit_code != 0


def test_not_root_is_a_clear_error(layer: Layer) -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody and try
        os.close(r)
        message = b"no error"
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            run(RunSpec(layer.merged, ("true",)))
        except SandboxError as e:
            message = e.render().encode()
        except BaseException as e:  # noqa: BLE001
            message = repr(e).encode()
        os.write(w, message)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        message = f.read().decode()
    os.waitpid(pid, 0)
    assert "needs root" in message
    assert "enter a user namespace first: the `cloche build` command does, a program calls " \
        "cloche.rootless.enter()" in message


def test_bad_specs_are_rejected(layer: Layer) -> None:
    with pytest.raises(SandboxError, match="network"):
        RunSpec(layer.merged, ("true",), network="bridge")
    with pytest.raises(SandboxError, match="empty"):
        RunSpec(layer.merged, ())
    with pytest.raises(SandboxError, match="absolute"):
        Mount("relative/path", kind="tmpfs")


def test_mount_target_symlink_cannot_escape(layer: Layer, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    assert layer.run(f"ln -s {outside} /escape").result.ok
    step = layer.run("echo x > /escape/f; cat /escape/f",
                     mounts=(Mount("/escape", kind="tmpfs"),))
    assert step.out == b"x\n"
    assert os.listdir(outside) == []


def test_capabilities_are_dockers_default_set(layer: Layer) -> None:
    step = layer.run("grep -E '^Cap(Bnd|Eff)' /proc/self/status; mount -t tmpfs none /tmp")
    assert step.text.split()[:4] == ["CapEff:", "00000000a80425fb", "CapBnd:", "00000000a80425fb"]
    assert step.result.exit_code != 0  # no CAP_SYS_ADMIN, as under docker build


def test_concurrent_steps_do_not_mix(busybox_rootfs: Path, tmp_path: Path) -> None:
    from tests.sandbox.conftest import _mounted
    results: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            for layer in _mounted(busybox_rootfs, tmp_path / str(i)):
                results[i] = layer.run(f"hostname; echo {i} > /mine", hostname=f"h{i}").out
                assert (layer.upper / "mine").read_text() == f"{i}\n"
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    for i in range(4):
        (tmp_path / str(i)).mkdir()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results == {i: f"h{i}\n".encode() for i in range(4)}


def test_a_failing_output_callback_does_not_hang_the_step(layer: Layer) -> None:
    def broken(chunk: bytes) -> None:
        raise RuntimeError("sink failed")

    with pytest.raises(RuntimeError, match="sink failed"):
        run(RunSpec(layer.merged, ("/bin/sh", "-c", "head -c 1000000 /dev/zero"),
                    stdout=broken))


def test_umask_is_0022_whatever_the_callers(layer: Layer) -> None:
    old = os.umask(0o077)
    try:
        step = layer.run("touch /f; mkdir /d; stat -c %a /f /d /tmp/scratch /srv/new",
                         mounts=(Mount("/tmp/scratch", kind="tmpfs"),), cwd="/srv/new")
    finally:
        os.umask(old)
    assert step.text.split() == ["644", "755", "1777", "755"]


def test_setup_failure_is_a_sandbox_error_naming_the_mount(layer: Layer, tmp_path: Path) -> None:
    from cloche.sandbox import SandboxSetupError
    with pytest.raises(SandboxSetupError, match="/etc/passwd"):
        layer.run("true", mounts=(Mount("/etc/passwd", source=tmp_path),))  # dir over a file
    with pytest.raises(SandboxError, match="not a directory"):
        layer.run("true", mounts=(Mount("/etc/passwd/x", kind="tmpfs"),))
    assert layer.upper_entries() in ([], ["etc"])  # nothing left behind by the failures


def test_security_insecure_is_privileged(layer: Layer) -> None:
    script = ("grep CapEff /proc/self/status; mount -t tmpfs none /tmp && echo mounted; "
              "umount /tmp; test -e /dev/vda -o -e /dev/sda -o -e /dev/loop0 && echo host-dev; "
              "touch /sys/kernel/profiling 2>/dev/null; grep -c . /proc/keys >/dev/null && "
              "echo keys-visible")
    step = layer.run(script, security="insecure")
    lines = step.text.split("\n")
    with open("/proc/self/status") as f:  # all the caller has (a VM may withhold some)
        ours = next(line.split()[1] for line in f if line.startswith("CapBnd:"))
    assert lines[0].split()[1] == ours
    assert "mounted" in lines and "host-dev" in lines
    normal = layer.run(script)
    assert "mounted" not in normal.text and "host-dev" not in normal.text
    with pytest.raises(SandboxError, match="security"):
        RunSpec(layer.merged, ("true",), security="privileged")


def test_cancel_ends_its_scopes_steps_in_other_threads_and_no_others(busybox_rootfs: Path,
                                                                      tmp_path: Path) -> None:
    """Two builds in one process have two scopes: cancelling one kills its two steps and
    leaves the other build's step running to its end."""
    from cloche.sandbox import CancelScope, StepCancelled
    from tests.sandbox.conftest import _mounted
    n = str(random.randint(10**6, 10**7))
    started = threading.Barrier(4)
    ours, theirs = CancelScope(), CancelScope()
    outcomes: dict[int, object] = {}

    def one(i: int, scope: CancelScope, script: str) -> None:
        (tmp_path / str(i)).mkdir()
        for layer in _mounted(busybox_rootfs, tmp_path / str(i)):
            def seen(chunk: bytes) -> None:
                if b"up" in chunk:
                    started.wait()
            try:
                outcomes[i] = run(RunSpec(layer.merged, ("/bin/sh", "-c", script),
                                          stdout=seen, cancel=scope)).exit_code
            except BaseException as e:  # noqa: BLE001
                outcomes[i] = e

    long = f"sleep {n} & echo up; sleep {n}"
    threads = [threading.Thread(target=one, args=(0, ours, long)),
               threading.Thread(target=one, args=(1, ours, long)),
               threading.Thread(target=one, args=(2, theirs, "echo up; sleep 1; exit 7"))]
    for t in threads:
        t.start()
    started.wait()
    assert ours.cancel() == 2
    for t in threads:
        t.join()
    assert isinstance(outcomes[0], StepCancelled) and isinstance(outcomes[1], StepCancelled)
    assert outcomes[2] == 7  # the other scope's step ran to its own end
    assert not theirs.cancelled
    assert _host_processes_with(b"sleep\0" + n.encode()) == []
    assert ours.cancel() == 0


def test_a_step_that_starts_after_cancel_is_cancelled_too(busybox_rootfs: Path,
                                                          tmp_path: Path) -> None:
    """The race behind a hung Ctrl-C: the scope was cancelled while a worker thread was
    between its last check and the start of its step. That step stops at once instead of
    running to its end."""
    from cloche.sandbox import CancelScope, StepCancelled
    from tests.sandbox.conftest import _mounted
    n = str(random.randint(10**6, 10**7))
    scope = CancelScope()
    assert scope.cancel() == 0  # nothing running: this kill cannot reach the step below
    for layer in _mounted(busybox_rootfs, tmp_path):
        # without the scope's flag the step would end by its timeout, a result and not
        # StepCancelled
        with pytest.raises(StepCancelled):
            run(RunSpec(layer.merged, ("/bin/sh", "-c", f"sleep {n}"), cancel=scope,
                        timeout=20))
    assert _host_processes_with(b"sleep\0" + n.encode()) == []
