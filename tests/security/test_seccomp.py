"""Issue 9, items 7 and 12: Docker's default seccomp profile, the keyring, the cgroup namespace.

The attacks run raw system calls from a real RUN (``syscall_probe`` writes a tiny static
program into the step's root filesystem) and check the kernel's answer: before the filter,
each call below reached the kernel (it succeeded, or failed with the kernel's own errno:
EFAULT for a bad pointer, EBADF, EINVAL...); with it, it fails with Docker's EPERM (or
ENOSYS for clone3). The filter itself is also run through a small BPF interpreter, on every
architecture it knows, for the calls whose kernel answer would be EPERM anyway.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import uuid
from collections.abc import Iterator

import pytest

from cloche.sandbox import seccomp, syscall_tables
from cloche.sandbox.init import DEFAULT_CAPS
from tests.sandbox.conftest import Layer
from tests.security.syscall_probe import PREV, Buf, Call, build

x86_64_only = pytest.mark.skipif(os.uname().machine != "x86_64",
                                 reason="the probes are x86-64 machine code")
AT_FDCWD = -100
KEY_SPEC_SESSION_KEYRING, KEY_SPEC_USER_KEYRING = -3, -4
KEYCTL_LINK, KEYCTL_SEARCH, KEYCTL_READ, KEYCTL_SET_TIMEOUT, KEYCTL_INVALIDATE = 8, 10, 11, 15, 21
CLONE_NEWUSER, CLONE_FS = 0x10000000, 0x200
NR = syscall_tables.X86_64


def probe(layer: Layer, *calls: Call, security: str = "sandbox") -> tuple[int, bytes]:
    """Run the calls from a RUN step: (errno of the first that failed or 0, stdout)."""
    path = layer.merged / "probe"
    path.write_bytes(build(*calls))
    os.chmod(path, 0o755)
    step = layer.run(("/probe",), security=security)
    return step.result.exit_code, step.out


# --- item 7: the host's keys ---------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _add_key(description: bytes, payload: bytes, keyring: int) -> int:
    key = _libc.syscall(ctypes.c_long(NR["add_key"]), b"user", description, payload,
                        ctypes.c_size_t(len(payload)), ctypes.c_int(keyring))
    if key < 0:
        raise OSError(ctypes.get_errno(), "add_key")
    return int(key)


def _keyctl(*args: int) -> int:
    return int(_libc.syscall(ctypes.c_long(NR["keyctl"]), *(ctypes.c_long(a) for a in args)))


@pytest.fixture()
def host_keys() -> Iterator[tuple[dict[int, bytes], bytes]]:
    """A secret key in host root's session keyring and one in its user keyring.

    The user keyring is linked into the session keyring, as pam_keyinit does for a login
    session: that is what makes root's user keys readable (possessed) by its processes.
    Descriptions differ (possession is looked up by description); keys expire on their own
    should the clean-up not run.
    """
    marker = f"host-secret-{uuid.uuid4().hex}".encode()
    names = {ring: f"cloche-test-{uuid.uuid4().hex}".encode()
             for ring in (KEY_SPEC_SESSION_KEYRING, KEY_SPEC_USER_KEYRING)}
    _keyctl(KEYCTL_LINK, KEY_SPEC_USER_KEYRING, KEY_SPEC_SESSION_KEYRING)
    keys = [_add_key(name, marker, ring) for ring, name in names.items()]
    try:
        for key in keys:
            _keyctl(KEYCTL_SET_TIMEOUT, key, 600)
        yield names, marker
    finally:
        for key in keys:
            assert _keyctl(KEYCTL_INVALIDATE, key) == 0


def _read_key(keyring: int, description: bytes) -> tuple[Call, ...]:
    buf = Buf(256)
    return (Call(NR["keyctl"], (KEYCTL_SEARCH, keyring, b"user", description, 0)),
            Call(NR["keyctl"], (KEYCTL_READ, PREV, buf, 256)),
            Call(NR["write"], (1, buf, PREV)))


@x86_64_only
@pytest.mark.parametrize("keyring", [KEY_SPEC_SESSION_KEYRING, KEY_SPEC_USER_KEYRING],
                         ids=["session", "user"])
def test_run_cannot_read_host_root_keys(layer: Layer, host_keys: tuple[dict[int, bytes], bytes],
                                        keyring: int) -> None:
    # Before: both keys were found and printed (exit 0, stdout == the marker).
    names, marker = host_keys
    code, out = probe(layer, *_read_key(keyring, names[keyring]))
    assert marker not in out
    assert code == errno.EPERM


@x86_64_only
def test_insecure_run_gets_a_fresh_session_keyring(
        layer: Layer, host_keys: tuple[dict[int, bytes], bytes]) -> None:
    # No filter under --security=insecure (as BuildKit), but a new session keyring as runc
    # gives every container: the caller's session keys stay out of reach. Before: found.
    names, marker = host_keys
    code, out = probe(layer, *_read_key(KEY_SPEC_SESSION_KEYRING, names[KEY_SPEC_SESSION_KEYRING]),
                      security="insecure")
    assert marker not in out
    assert code == errno.ENOKEY


# --- item 12: the default profile in a real RUN -------------------------------------------

# (call, what the kernel answered before the filter; the filter's answer is EPERM unless said)
BLOCKED = {
    "keyctl": (Call(NR["keyctl"], (0, KEY_SPEC_SESSION_KEYRING, 0)), 0),
    "add_key": (Call(NR["add_key"], (b"user", b"probe", b"x", 1, -2)), 0),
    "request_key": (Call(NR["request_key"], (b"user", b"no-such-key", 0, 0)), errno.ENOKEY),
    "bpf": (Call(NR["bpf"], (0, 1, 8)), errno.EFAULT),
    "perf_event_open": (Call(NR["perf_event_open"], (0, 0, -1, -1, 0)), errno.EFAULT),
    "userfaultfd": (Call(NR["userfaultfd"], (1 | 0x40000000,)), errno.EINVAL),
    "unshare": (Call(NR["unshare"], (0,)), 0),
    "unshare-user": (Call(NR["unshare"], (CLONE_NEWUSER,)), 0),
    "clone-user": (Call(NR["clone"], (CLONE_NEWUSER | CLONE_FS, 0, 0, 0, 0)), errno.EINVAL),
    "mount": (Call(NR["mount"], (b"none", b"/tmp", 1, 0, 0)), errno.EFAULT),
    "umount2": (Call(NR["umount2"], (b"/no-such-dir", 0)), errno.ENOENT),
    "setns": (Call(NR["setns"], (-1, 0)), errno.EBADF),
    "open_tree": (Call(NR["open_tree"], (AT_FDCWD, b"/", 0)), 0),
    "open_by_handle_at": (Call(NR["open_by_handle_at"], (-1, 1, 0)), errno.EFAULT),
    "settimeofday": (Call(NR["settimeofday"], (1, 0)), errno.EFAULT),
    "clock_settime": (Call(NR["clock_settime"], (0, 1)), errno.EFAULT),
    "personality": (Call(NR["personality"], (0x0040000,)), 0),  # ADDR_NO_RANDOMIZE
    "io_uring_setup": (Call(NR["io_uring_setup"], (1, 1)), errno.EFAULT),
    "fanotify_init": (Call(NR["fanotify_init"], (0x200, 0)), 0),
    "quotactl": (Call(NR["quotactl"], (0, 0, 0, 0)), errno.ENODEV),
    "kcmp": (Call(NR["kcmp"], (0x7FFFFFF0, 0x7FFFFFF0, 0, 0, 0)), errno.ESRCH),
    "mbind": (Call(NR["mbind"], (0, 0, 0, 0, 0, 0)), 0),
    "socket-vsock": (Call(NR["socket"], (40, 1, 0)), 0),
    "socket-vsock-high-bits": (Call(NR["socket"], (0x1_0000_0028, 1, 0)), 0),
    "socket-alg": (Call(NR["socket"], (38, 5, 0)), errno.EAFNOSUPPORT),
    "i386-keyctl": (Call(syscall_tables.I386["keyctl"], (0, KEY_SPEC_SESSION_KEYRING, 0),
                         i386=True), 0),
}


@x86_64_only
@pytest.mark.parametrize("name", sorted(BLOCKED))
def test_default_run_is_refused_what_docker_refuses(layer: Layer, name: str) -> None:
    call, before = BLOCKED[name]
    code, _ = probe(layer, call)
    assert code == errno.EPERM, (f"{name}: {os.strerror(code) if code else 'allowed'} "
                                 f"(before the filter: {os.strerror(before) if before else 'allowed'})")


@x86_64_only
def test_clone3_answers_enosys_so_libc_falls_back_to_clone(layer: Layer) -> None:
    # Before: EINVAL (the kernel read the bad size); Docker answers ENOSYS without SYS_ADMIN.
    assert probe(layer, Call(NR["clone3"], (0, 0)))[0] == errno.ENOSYS


@x86_64_only
def test_calls_newer_than_the_table_answer_enosys(layer: Layer) -> None:
    # 469 (file_setattr, Linux 6.17) is newer than the table: ENOSYS, as runc answers them,
    # so that a C library falls back. Before, the kernel read the call (EINVAL, or ENOSYS on
    # an older kernel).
    assert max(NR.values()) < 469
    assert probe(layer, Call(469, (AT_FDCWD, 1, 0, 0, 0)))[0] == errno.ENOSYS


ALLOWED = {
    "personality-query": (Call(NR["personality"], (0xFFFFFFFF,)), 0),
    "personality-linux": (Call(NR["personality"], (0,)), 0),
    "ptrace": (Call(NR["ptrace"], (16, 0x7FFFFFF0, 0, 0)), errno.ESRCH),  # reaches the kernel
    "process_vm_readv": (Call(NR["process_vm_readv"], (0x7FFFFFF0, 0, 0, 0, 0, 0)), 0),
    "chroot": (Call(NR["chroot"], (b"/",)), 0),  # CAP_SYS_CHROOT is a default capability
    "socket-inet": (Call(NR["socket"], (2, 1, 0)), 0),
    "socket-netlink": (Call(NR["socket"], (16, 3, 0)), 0),
    "i386-getpid": (Call(syscall_tables.I386["getpid"], (), i386=True), 0),
}


@x86_64_only
@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_default_run_keeps_what_docker_allows(layer: Layer, name: str) -> None:
    call, expected = ALLOWED[name]
    assert probe(layer, call)[0] == expected


def test_user_namespace_cannot_be_used_to_mount(layer: Layer) -> None:
    # Before: a new user namespace gave the step CAP_SYS_ADMIN over a new mount namespace.
    step = layer.run("busybox unshare -U -r -m sh -c 'mount -t tmpfs none /tmp && echo mounted'")
    assert b"mounted" not in step.out
    assert not step.result.ok


def test_ordinary_programs_still_work(layer: Layer) -> None:
    step = layer.run("set -e; mkdir -p /w; cd /w; echo a | sed s/a/b/ > f; wc -c < f; "
                     "(sleep 0; true) & wait $!; ps >/dev/null; id -u; chroot / true; echo ok")
    assert step.result.ok, step.err
    assert step.out.split() == [b"2", b"0", b"ok"]


def test_status_shows_filter_and_no_new_privs_as_buildkit(layer: Layer) -> None:
    # Before: "Seccomp: 0". BuildKit sets no seccomp for insecure steps, and never
    # no_new_privs (its spec has NoNewPrivileges false, so setuid programs work).
    status = layer.run("grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status").text.split()
    assert status == ["NoNewPrivs:", "0", "Seccomp:", "2"]
    insecure = layer.run("grep -E '^Seccomp:' /proc/self/status", security="insecure").text
    assert insecure.split() == ["Seccomp:", "0"]


def test_run_has_a_private_cgroup_namespace(layer: Layer) -> None:
    # Before: the host's cgroup namespace, and host cgroup paths in /proc/self/cgroup.
    host = os.readlink("/proc/self/ns/cgroup")
    for security in ("sandbox", "insecure"):
        step = layer.run("readlink /proc/self/ns/cgroup; cat /proc/self/cgroup",
                         security=security)
        lines = step.text.splitlines()
        assert lines[0].startswith("cgroup:[") and lines[0] != host
        assert all(line.endswith(":/") for line in lines[1:]), lines


# --- the filter on every architecture, through a BPF interpreter ---------------------------

def _run_filter(program: bytes, arch: int, nr: int, args: tuple[int, ...] = ()) -> int:
    """What the kernel would do: evaluate the classic BPF program on a seccomp_data."""
    full = (tuple(args) + (0,) * 6)[:6]
    data = struct.pack("<IIQ6Q", nr, arch, 0, *full)
    insns = list(seccomp.decode(program))
    acc, pc = 0, 0
    for _ in range(len(insns) + 1):
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == 0x54:
            acc &= k
        elif code == 0x05:
            pc += k
        elif code in (0x15, 0x25, 0x35):
            taken = {0x15: acc == k, 0x25: acc > k, 0x35: acc >= k}[code]
            pc += jt if taken else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected BPF op {code:#x}")
    raise AssertionError("the filter never returned")


ALLOW, EPERM, ENOSYS = seccomp.RET_ALLOW, seccomp.RET_ERRNO | 1, seccomp.RET_ERRNO | 38
ARCHES = {"x86_64": (seccomp.AUDIT_ARCH_X86_64, syscall_tables.X86_64),
          "i386": (seccomp.AUDIT_ARCH_I386, syscall_tables.I386),
          "aarch64": (seccomp.AUDIT_ARCH_AARCH64, syscall_tables.AARCH64)}
REFUSED = ("keyctl add_key request_key bpf perf_event_open userfaultfd unshare setns mount "
           "umount2 umount pivot_root move_mount fsopen fsmount open_tree kexec_load "
           "kexec_file_load init_module finit_module delete_module open_by_handle_at reboot "
           "swapon swapoff syslog acct settimeofday clock_settime stime sethostname "
           "setdomainname vhangup iopl ioperm lookup_dcookie quotactl nfsservctl uselib "
           "io_uring_setup io_uring_enter kcmp pidfd_getfd process_madvise get_mempolicy "
           "set_mempolicy mbind move_pages fanotify_init").split()
COMMON = ("read write openat close execve mmap futex exit_group wait4 rt_sigaction "
          "name_to_handle_at setuid capset").split()


def _filter(caps: frozenset[int], machine: str) -> bytes:
    return seccomp.compile_filter(seccomp.profile(caps, kernel=(6, 1)), machine)


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_filter_refuses_docker_refusals_on_every_arch(arch: str) -> None:
    machine = "aarch64" if arch == "aarch64" else "x86_64"
    program = _filter(DEFAULT_CAPS, machine)
    audit, table = ARCHES[arch]
    refused = [n for n in REFUSED if n in table]
    assert {"keyctl", "bpf", "mount", "kexec_load", "init_module", "reboot"} <= set(refused)
    for name in refused:
        assert _run_filter(program, audit, table[name]) == EPERM, name
    for name in COMMON:
        if name in table:
            assert _run_filter(program, audit, table[name]) == ALLOW, name
    assert _run_filter(program, audit, table["ptrace"]) == ALLOW  # Linux >= 4.8, as Docker
    assert _run_filter(program, audit, table["clone3"]) == ENOSYS
    assert _run_filter(program, audit, max(table.values()) + 1) == ENOSYS
    assert _run_filter(program, audit, 0xFFFFFFFF) in (EPERM, ENOSYS)
    clone = table["clone"]
    assert _run_filter(program, audit, clone, (0x01200011,)) == ALLOW  # fork's flags
    assert _run_filter(program, audit, clone, (0x01200011 | CLONE_NEWUSER,)) == EPERM
    personality = table["personality"]
    assert _run_filter(program, audit, personality, (0xFFFFFFFF,)) == ALLOW
    assert _run_filter(program, audit, personality, (0x0040000,)) == EPERM


def test_filter_checks_the_architecture() -> None:
    x86 = _filter(DEFAULT_CAPS, "x86_64")
    arm = _filter(DEFAULT_CAPS, "aarch64")
    getpid = syscall_tables.X86_64["getpid"]
    assert _run_filter(x86, seccomp.AUDIT_ARCH_AARCH64, getpid) == seccomp.RET_KILL_PROCESS
    assert _run_filter(arm, seccomp.AUDIT_ARCH_I386, 20) == seccomp.RET_KILL_PROCESS
    assert _run_filter(x86, seccomp.AUDIT_ARCH_X86_64, 0x40000000 | getpid) == EPERM  # x32
    with pytest.raises(seccomp.SeccompError, match="s390x"):
        _filter(DEFAULT_CAPS, "s390x")


def test_capabilities_unlock_calls_as_docker() -> None:
    admin = _filter(DEFAULT_CAPS | {seccomp.CAP_SYS_ADMIN}, "x86_64")
    plain = _filter(DEFAULT_CAPS - {seccomp.CAP_SYS_CHROOT}, "x86_64")
    x86 = seccomp.AUDIT_ARCH_X86_64
    assert _run_filter(admin, x86, NR["mount"]) == ALLOW
    assert _run_filter(admin, x86, NR["clone3"]) == ALLOW
    assert _run_filter(admin, x86, NR["clone"], (CLONE_NEWUSER,)) == ALLOW
    assert _run_filter(admin, x86, NR["reboot"]) == EPERM  # that needs CAP_SYS_BOOT
    assert _run_filter(plain, x86, NR["chroot"]) == EPERM
    assert _run_filter(_filter(DEFAULT_CAPS, "x86_64"), x86, NR["chroot"]) == ALLOW


def test_socket_families_are_checked_on_the_low_32_bits() -> None:
    program, x86 = _filter(DEFAULT_CAPS, "x86_64"), seccomp.AUDIT_ARCH_X86_64
    answers = {family: _run_filter(program, x86, NR["socket"], (family,))
               for family in (1, 2, 10, 16, 37, 38, 39, 40, 41, 44, 0x1_0000_0028)}
    assert [f for f, a in answers.items() if a != ALLOW] == [38, 40, 0x1_0000_0028]
