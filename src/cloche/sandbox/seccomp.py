"""The default seccomp filter of a RUN step: Docker's default profile, as a classic BPF program.

BuildKit confines every RUN that is not ``--security=insecure`` with containerd's default
profile, which is Docker's (moby's profiles/seccomp/default.json): an allow-list, everything
else fails with EPERM. This module gives the same answers, to a step with Docker's default
capabilities, without libseccomp: ``profile`` says what each call gets, ``compile_filter``
writes the BPF program for the machine, ``install`` loads it with prctl(PR_SET_SECCOMP).

What a step gets, as under Docker: calls off the list fail with EPERM (keyctl, add_key,
request_key, bpf, perf_event_open, userfaultfd, unshare, setns, mount and the new mount API,
pivot_root, kexec_load, module loading, reboot, swapon, syslog, acct, settimeofday,
io_uring...); calls that a capability the step lacks would allow stay blocked (mount needs
CAP_SYS_ADMIN, chroot is allowed because CAP_SYS_CHROOT is in the default set); clone is
allowed only without namespace flags and clone3 answers ENOSYS so that the C library falls
back to clone; personality only with the usual values; socket not for AF_ALG nor AF_VSOCK;
ptrace and process_vm_* are allowed (kernel >= 4.8: the kernel's own checks suffice).

Where it is tighter than libseccomp's rendering of the profile: argument checks look at the
low 32 bits only, which is what the kernel uses for these (int) arguments, so high bits set in
a 64-bit register cannot slip past them; x32 calls (x86-64 numbers with bit 30 set) get EPERM
instead of the x86-64 list (the x32 ABI is off in most kernels and has been a way around
filters); a foreign architecture's call (other than i386 on x86-64, which gets the list)
kills the process. As runc does, a call numbered above every call the table knows answers
ENOSYS, so that a C library newer than this table falls back to an older call.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple, Union

from cloche.errors import SandboxError
from cloche.sandbox import syscall_tables


class SeccompError(SandboxError):
    """The step's seccomp filter could not be made or loaded."""


# Calls every step may make, whatever its capabilities.
_ALWAYS = frozenset("""
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown
chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect
copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir fchmod
fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr
flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate
ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv futex_wake futimesat
getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32
getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority
getrandom getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage
getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr
getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl
io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup
io_submit ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown
lchown32 lgetxattr link linkat listen listmount listxattr listxattrat llistxattr _llseek
lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack membarrier memfd_create
memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect
mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock
munlockall munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2
pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll
ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6
pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv
recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr removexattrat rename
renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask
rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
sched_get_priority_min sched_getscheduler sched_rr_get_interval
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority
setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32
setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32
setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4
sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statmount
statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create
timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64
timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times
tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat uretprobe utime utimensat
utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
arch_prctl modify_ldt
""".split())  # the last line: x86 only (the other tables do not have them)

# Allowed from Linux 4.8 on, whose ptrace checks no longer let a tracer get round seccomp.
_SINCE_4_8 = frozenset({"ptrace", "process_vm_readv", "process_vm_writev"})

CAP_DAC_READ_SEARCH, CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_SYS_CHROOT = 2, 16, 17, 18
CAP_SYS_PTRACE, CAP_SYS_PACCT, CAP_SYS_ADMIN, CAP_SYS_BOOT, CAP_SYS_NICE = 19, 20, 21, 22, 23
CAP_SYS_TIME, CAP_SYS_TTY_CONFIG, CAP_SYSLOG, CAP_PERFMON, CAP_BPF = 25, 26, 34, 38, 39

# Calls a capability of the step unlocks (the kernel checks that capability again).
_BY_CAPABILITY: dict[int, frozenset[str]] = {
    CAP_DAC_READ_SEARCH: frozenset({"open_by_handle_at"}),
    CAP_SYS_ADMIN: frozenset("""
        bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie
        lsm_get_self_attr lsm_list_modules lsm_set_self_attr mount mount_setattr move_mount
        open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog
        umount umount2 unshare""".split()),
    CAP_SYS_BOOT: frozenset({"reboot"}),
    CAP_SYS_CHROOT: frozenset({"chroot"}),
    CAP_SYS_MODULE: frozenset({"delete_module", "init_module", "finit_module"}),
    CAP_SYS_PACCT: frozenset({"acct"}),
    CAP_SYS_PTRACE: frozenset({"kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv",
                               "process_vm_writev", "ptrace"}),
    CAP_SYS_RAWIO: frozenset({"iopl", "ioperm"}),
    CAP_SYS_TIME: frozenset({"settimeofday", "stime", "clock_settime", "clock_settime64"}),
    CAP_SYS_TTY_CONFIG: frozenset({"vhangup"}),
    CAP_SYS_NICE: frozenset({"get_mempolicy", "mbind", "set_mempolicy",
                             "set_mempolicy_home_node"}),
    CAP_SYSLOG: frozenset({"syslog"}),
    CAP_BPF: frozenset({"bpf"}),
    CAP_PERFMON: frozenset({"perf_event_open"}),
}

# The namespace flags clone may not carry without CAP_SYS_ADMIN: NEWNS, NEWCGROUP, NEWUTS,
# NEWIPC, NEWUSER, NEWPID, NEWNET.
CLONE_NAMESPACES = 0x7E020000
AF_ALG, AF_VSOCK = 38, 40
DEFAULT_ERRNO = errno.EPERM


@dataclass(frozen=True)
class ArgTest:
    """One test on the low 32 bits of argument ``index``: ``(arg & mask) op value``."""

    index: int
    op: Literal["eq", "lt", "gt"]
    value: int
    mask: int = 0xFFFFFFFF


@dataclass(frozen=True)
class Allow:
    """The call goes to the kernel."""


@dataclass(frozen=True)
class Errno:
    """The call fails at once with this errno."""

    errno: int


@dataclass(frozen=True)
class AllowIf:
    """Allowed when any of the tests holds, else the default errno."""

    tests: tuple[ArgTest, ...]


Rule = Union[Allow, Errno, AllowIf]


def profile(caps: frozenset[int], kernel: tuple[int, int] | None = None) -> dict[str, Rule]:
    """What each named call gets for a step holding ``caps``; a name left out gets EPERM."""
    kernel = kernel or kernel_version()
    allowed = set(_ALWAYS)
    if kernel >= (4, 8):
        allowed |= _SINCE_4_8
    for cap, names in _BY_CAPABILITY.items():
        if cap in caps:
            allowed |= names
    rules: dict[str, Rule] = {name: Allow() for name in allowed}
    rules.setdefault("socket", AllowIf((ArgTest(0, "lt", AF_ALG), ArgTest(0, "eq", AF_ALG + 1),
                                        ArgTest(0, "gt", AF_VSOCK))))
    rules.setdefault("personality", AllowIf(tuple(
        ArgTest(0, "eq", v) for v in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF))))
    if CAP_SYS_ADMIN not in caps:
        rules["clone"] = AllowIf((ArgTest(0, "eq", 0, mask=CLONE_NAMESPACES),))
        rules["clone3"] = Errno(errno.ENOSYS)  # so that the C library falls back to clone
    return rules


def kernel_version() -> tuple[int, int]:
    """(major, minor) of the running kernel."""
    parts = os.uname().release.split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


# --- classic BPF -------------------------------------------------------------------------

_LD_ABS, _JEQ, _JGT, _JGE, _JA, _RET, _AND = 0x20, 0x15, 0x25, 0x35, 0x05, 0x06, 0x54
RET_KILL_PROCESS, RET_ERRNO, RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
_OFF_NR, _OFF_ARCH, _OFF_ARGS = 0, 4, 16
AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, AUDIT_ARCH_AARCH64 = 0xC000003E, 0x40000003, 0xC00000B7
X32_SYSCALL_BIT = 0x40000000
BPF_MAXINSNS = 4096


class _Insn(NamedTuple):
    code: int
    k: int | str = 0  # a label for _JA
    jt: int | str = 0  # labels for conditional jumps
    jf: int | str = 0


class _Asm:
    """Instructions with symbolic jump targets, resolved into ``struct sock_filter`` bytes."""

    def __init__(self) -> None:
        self.items: list[_Insn | str] = []
        self._n = 0

    def label(self) -> str:
        self._n += 1
        return f"L{self._n}"

    def at(self, label: str) -> None:
        self.items.append(label)

    def op(self, code: int, k: int | str = 0, jt: int | str = 0, jf: int | str = 0) -> None:
        self.items.append(_Insn(code, k, jt, jf))

    def ret(self, value: int) -> None:
        self.op(_RET, value)

    def assemble(self) -> bytes:
        where: dict[str, int] = {}
        insns: list[_Insn] = []
        for item in self.items:
            if isinstance(item, str):
                where[item] = len(insns)
            else:
                insns.append(item)
        if len(insns) > BPF_MAXINSNS:
            raise SeccompError(f"seccomp filter too long: {len(insns)} instructions")
        out = bytearray()
        for pc, insn in enumerate(insns):
            k = _relative(where, pc, insn.k, 0xFFFFFFFF) if insn.code == _JA else insn.k
            assert isinstance(k, int)
            out += struct.pack("=HBBI", insn.code, _relative(where, pc, insn.jt, 255),
                               _relative(where, pc, insn.jf, 255), k)
        return bytes(out)


def _relative(where: Mapping[str, int], pc: int, target: int | str, limit: int) -> int:
    """A jump target as BPF wants it: how many instructions to skip after ``pc``."""
    if isinstance(target, int):
        return target
    offset = where[target] - pc - 1
    if not 0 <= offset <= limit:
        raise SeccompError(f"seccomp filter jump out of range ({offset})")
    return offset


def _action(rule: Rule) -> int | None:
    if isinstance(rule, Allow):
        return RET_ALLOW
    if isinstance(rule, Errno):
        return RET_ERRNO | rule.errno
    return None


class _Span(NamedTuple):
    lo: int  # first number
    hi: int  # past the last number
    ret: int | None  # what to return, or None: test ``rule``'s arguments
    rule: AllowIf | None = None


def _spans(table: Mapping[str, int], rules: Mapping[str, Rule]) -> list[_Span]:
    """Numbers 0..2**32 cut into runs that get one answer (argument tests: one number each)."""
    by_nr = {nr: rules.get(name, Errno(DEFAULT_ERRNO)) for name, nr in table.items()}
    top = max(table.values()) + 1
    spans: list[_Span] = []
    for nr in range(top):
        rule = by_nr.get(nr, Errno(DEFAULT_ERRNO))
        ret = _action(rule)
        if ret is None:
            assert isinstance(rule, AllowIf)
            spans.append(_Span(nr, nr + 1, None, rule))
        elif spans and spans[-1].ret == ret and spans[-1].hi == nr:
            spans[-1] = _Span(spans[-1].lo, nr + 1, ret)
        else:
            spans.append(_Span(nr, nr + 1, ret))
    spans.append(_Span(top, 1 << 32, RET_ERRNO | errno.ENOSYS))  # newer than the table
    return spans


def _arg_tests(asm: _Asm, rule: AllowIf) -> None:
    allow = asm.label()
    for test in rule.tests:
        nxt = asm.label()
        asm.op(_LD_ABS, _OFF_ARGS + 8 * test.index)  # the low half (little-endian machines)
        if test.mask != 0xFFFFFFFF:
            asm.op(_AND, test.mask)
        if test.op == "eq":
            asm.op(_JEQ, test.value, allow, nxt)
        elif test.op == "gt":
            asm.op(_JGT, test.value, allow, nxt)
        else:  # lt: not (>=)
            asm.op(_JGE, test.value, nxt, allow)
        asm.at(nxt)
    asm.ret(RET_ERRNO | DEFAULT_ERRNO)
    asm.at(allow)
    asm.ret(RET_ALLOW)


def _tree(asm: _Asm, spans: list[_Span]) -> None:
    """A binary search on the call number (in A) over ``spans``; depth log2(len), bounded."""
    stack: list[tuple[int, int, str | None]] = [(0, len(spans), None)]
    while stack:  # explicit stack: right halves wait while left halves are written first
        lo, hi, label = stack.pop()
        if label is not None:
            asm.at(label)
        if hi - lo == 1:
            span = spans[lo]
            if span.rule is not None:
                _arg_tests(asm, span.rule)
            else:
                assert span.ret is not None
                asm.ret(span.ret)
            continue
        mid = (lo + hi) // 2
        right = asm.label()
        asm.op(_JGE, spans[mid].lo, 0, 1)  # >= : take the JA to the right half
        asm.op(_JA, right)
        stack.append((mid, hi, right))
        stack.append((lo, mid, None))


def _arches(machine: str) -> list[tuple[int, Mapping[str, int]]]:
    if machine == "x86_64":
        return [(AUDIT_ARCH_X86_64, syscall_tables.X86_64), (AUDIT_ARCH_I386, syscall_tables.I386)]
    if machine in ("aarch64", "arm64"):
        return [(AUDIT_ARCH_AARCH64, syscall_tables.AARCH64)]
    raise SeccompError(f"no seccomp profile for this machine ({machine}): cloche knows the "
                       "system calls of x86_64 and aarch64 only",
                       hint="use RUN --security=insecure (with --allow security.insecure) "
                            "to run without a filter")


def compile_filter(rules: Mapping[str, Rule], machine: str | None = None) -> bytes:
    """The BPF program (``struct sock_filter`` array) applying ``rules`` on ``machine``."""
    arches = _arches(machine or platform.machine())
    asm = _Asm()
    labels = [asm.label() for _ in arches]
    asm.op(_LD_ABS, _OFF_ARCH)
    for (audit_arch, _), label in zip(arches, labels):
        asm.op(_JEQ, audit_arch, 0, 1)
        asm.op(_JA, label)
    asm.ret(RET_KILL_PROCESS)  # a call of an architecture the filter does not know
    for (audit_arch, table), label in zip(arches, labels):
        asm.at(label)
        asm.op(_LD_ABS, _OFF_NR)
        if audit_arch == AUDIT_ARCH_X86_64:
            asm.op(_JGE, X32_SYSCALL_BIT, 0, 1)
            asm.ret(RET_ERRNO | DEFAULT_ERRNO)  # the x32 ABI
        _tree(asm, _spans(table, rules))
    return asm.assemble()


def default_filter(caps: frozenset[int]) -> bytes:
    """Docker's default profile for a step with ``caps``, for this machine."""
    return compile_filter(profile(caps))


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(program: bytes) -> None:
    """Load ``program`` on the calling thread; it holds for it and every process it starts.

    The caller needs CAP_SYS_ADMIN or no_new_privs: the init is still root when it calls
    this, so that setuid programs in the step work as under BuildKit, which does not set
    no_new_privs.
    """
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong,
                            ctypes.c_ulong]
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise SeccompError(f"cannot load the seccomp filter: {os.strerror(err)}")


def decode(program: bytes) -> Iterator[tuple[int, int, int, int]]:
    """The (code, jt, jf, k) instructions of ``program``, for tests and debugging."""
    yield from struct.iter_unpack("=HBBI", program)
