"""Tiny static x86-64 programs that make raw system calls, for attacks from inside a RUN.

The busybox rootfs has no keyctl, no python and no compiler, and a test must not depend on
one being installed. So the test writes its own executable: a minimal ELF file (one loadable
segment, no libc) whose code makes the given system calls in order and exits with the errno
of the first one that fails, or 0 (the last call's result can be passed on to the next one,
and written with ``write``). Calls can go through ``syscall`` (the native x86-64 table) or
``int 0x80`` (the i386 compat table, which a seccomp filter must check too).
"""

from __future__ import annotations

import platform
import struct
from dataclasses import dataclass

BASE = 0x400000
_HEADERS = 64 + 56
PREV = object()  # an argument: the result of the previous call


@dataclass(frozen=True)
class Buf:
    """An argument: the address of ``size`` zeroed bytes."""

    size: int


@dataclass(frozen=True)
class Call:
    """One system call: number and up to six arguments (int, bytes, ``Buf`` or ``PREV``)."""

    nr: int
    args: tuple[object, ...] = ()
    i386: bool = False  # through int 0x80: the compat table, 32-bit arguments


# movabs reg, imm64 (REX prefix, opcode) and mov reg, rbx, for rdi rsi rdx r10 r8 r9.
_MOVABS = [b"\x48\xbf", b"\x48\xbe", b"\x48\xba", b"\x49\xba", b"\x49\xb8", b"\x49\xb9"]
_FROM_RBX = [b"\x48\x89\xdf", b"\x48\x89\xde", b"\x48\x89\xda", b"\x49\x89\xda", b"\x49\x89\xd8",
             b"\x49\x89\xd9"]
# mov r32, imm32 and mov r32, ebx for ebx ecx edx esi edi ebp (the i386 argument registers).
_MOV32 = [b"\xbb", b"\xb9", b"\xba", b"\xbe", b"\xbf", b"\xbd"]
_FROM_EBX32 = [b"", b"\x89\xd9", b"\x89\xda", b"\x89\xde", b"\x89\xdf", b"\x89\xdd"]


def _code(calls: list[Call], addresses: dict[int, int], fail_at: int) -> bytes:
    out = bytearray()
    for call in calls:
        regs = []
        for i, arg in enumerate(call.args):
            if arg is PREV:
                regs.append((_FROM_EBX32 if call.i386 else _FROM_RBX)[i])
                continue
            value = addresses[id(arg)] if isinstance(arg, (bytes, Buf)) else int(arg)  # type: ignore[call-overload]
            if call.i386:
                regs.append(_MOV32[i] + struct.pack("<I", value & 0xFFFFFFFF))
            else:
                regs.append(_MOVABS[i] + struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF))
        if call.i386:
            # ebx is both PREV's home and the first argument: set it last.
            out += b"".join(regs[1:]) + (regs[0] if regs else b"")
            out += b"\xb8" + struct.pack("<I", call.nr) + b"\xcd\x80"  # mov eax, nr; int 0x80
            out += b"\x48\x63\xc0"  # movsxd rax, eax: the 32-bit result, sign extended
        else:
            out += b"".join(regs)
            out += b"\x48\xb8" + struct.pack("<Q", call.nr) + b"\x0f\x05"  # movabs rax; syscall
        out += b"\x48\x89\xc3"  # mov rbx, rax
        out += b"\x48\x85\xc0"  # test rax, rax
        here = BASE + _HEADERS + len(out) + 6
        out += b"\x0f\x88" + struct.pack("<i", fail_at - here)  # js fail
    out += b"\x31\xff\xb8\xe7\x00\x00\x00\x0f\x05"  # exit_group(0)
    return bytes(out)


_FAIL = b"\x48\x89\xc7\x48\xf7\xdf\xb8\xe7\x00\x00\x00\x0f\x05"  # exit_group(-rax)


def build(*calls: Call) -> bytes:
    """The ELF executable that makes ``calls`` in order."""
    if platform.machine() != "x86_64":
        raise RuntimeError("syscall probes are x86-64 code")
    listed = list(calls)
    data = [a for c in listed for a in c.args if isinstance(a, (bytes, Buf))]
    dummy = {id(a): 0 for a in data}
    size = len(_code(listed, dummy, 0)) + len(_FAIL)
    addresses, blob, offset = {}, bytearray(), BASE + _HEADERS + size
    for arg in data:
        addresses[id(arg)] = offset + len(blob)
        blob += arg + b"\0" if isinstance(arg, bytes) else bytes(arg.size)  # type: ignore[operator]
    code = _code(listed, addresses, BASE + _HEADERS + size - len(_FAIL)) + _FAIL
    body = code + bytes(blob)
    total = _HEADERS + len(body)
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01", 2, 62, 1, BASE + _HEADERS,
                       64, 0, 0, 64, 56, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 7, 0, BASE, BASE, total, total, 0x1000)
    return ehdr + phdr + body
