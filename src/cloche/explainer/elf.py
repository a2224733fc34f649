"""A small, bounded ELF reader: what `will it run` needs, and nothing more.

It reads the ELF header (32 and 64 bits, either byte order), the program headers, PT_INTERP,
the dynamic section's DT_NEEDED, DT_RPATH, DT_RUNPATH and DT_SONAME (their strings through
DT_STRTAB, mapped to a file offset by the PT_LOAD segments) and the PT_NOTE segments (a Go
binary carries a "Go" note). Every read goes through ``read_at(offset, size)`` and is bounded
(header counts, section sizes, string lengths), so a hostile file (huge, truncated, with
counts or offsets that point anywhere) costs little and raises ``ElfError``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ELF_MAGIC", "ElfError", "ElfInfo", "parse_elf", "parse_elf_bytes"]

ELF_MAGIC = b"\x7fELF"
ReadAt = Callable[[int, int], bytes]

MAX_PHNUM = 4096              # real files have a dozen; PN_XNUM (0xffff) is refused
MAX_INTERP = 4096             # PATH_MAX
MAX_DYNAMIC = 1 << 20         # 64k entries of 16 bytes
MAX_NOTES = 1 << 16
MAX_STRING = 4096
MAX_NEEDED = 1024

ET_EXEC, ET_DYN = 2, 3
PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_NOTE = 1, 2, 3, 4
DT_NULL, DT_NEEDED, DT_STRTAB, DT_SONAME, DT_RPATH, DT_RUNPATH = 0, 1, 5, 14, 15, 29

# e_machine -> GOARCH-style architecture (Platform.architecture)
_MACHINES = {3: "386", 62: "amd64", 40: "arm", 183: "arm64", 8: "mips", 20: "ppc",
             21: "ppc64", 22: "s390x", 243: "riscv64", 258: "loong64"}


class ElfError(ValueError):
    """The file starts like an ELF file but is not a valid one (truncated, bad offsets)."""


@dataclass(frozen=True)
class ElfInfo:
    bits: int                       # 32 or 64
    big_endian: bool
    type: int                       # ET_EXEC, ET_DYN...
    machine: int
    interpreter: str | None         # PT_INTERP
    needed: tuple[str, ...] = ()    # DT_NEEDED, in order
    rpath: tuple[str, ...] = ()     # DT_RPATH, split on ':'
    runpath: tuple[str, ...] = ()   # DT_RUNPATH, split on ':'
    soname: str | None = None
    dynamic: bool = False           # has a PT_DYNAMIC segment
    go: bool = False                # built by the Go toolchain (a "Go" note)

    @property
    def architecture(self) -> str | None:
        """The GOARCH-style name of e_machine (None when unknown)."""
        arch = _MACHINES.get(self.machine)
        if arch == "ppc64" and not self.big_endian:
            return "ppc64le"
        if arch == "mips":
            return ("mips64" if self.bits == 64 else "mips") + ("" if self.big_endian else "le")
        return arch

    @property
    def is_executable(self) -> bool:
        """A program (ET_EXEC, or a PIE: ET_DYN with an interpreter)."""
        return self.type == ET_EXEC or (self.type == ET_DYN and self.interpreter is not None)

    @property
    def is_shared_library(self) -> bool:
        return self.type == ET_DYN and self.interpreter is None


def _read(read_at: ReadAt, offset: int, size: int, what: str) -> bytes:
    if offset < 0 or size < 0:
        raise ElfError(f"bad {what} offset")
    data = read_at(offset, size)
    if len(data) != size:
        raise ElfError(f"truncated {what} (wanted {size} bytes at {offset})")
    return data


def parse_elf_bytes(data: bytes) -> ElfInfo:
    """``parse_elf`` over bytes in memory."""
    return parse_elf(lambda offset, size: data[offset:offset + size])


def parse_elf(read_at: ReadAt) -> ElfInfo:
    """The ELF file that ``read_at(offset, size)`` reads (it returns fewer bytes at EOF)."""
    ident = _read(read_at, 0, 16, "ELF identification")
    if ident[:4] != ELF_MAGIC:
        raise ElfError("not an ELF file")
    if ident[4] not in (1, 2) or ident[5] not in (1, 2):
        raise ElfError(f"unknown ELF class {ident[4]} or data encoding {ident[5]}")
    bits = 32 if ident[4] == 1 else 64
    big = ident[5] == 2
    end = ">" if big else "<"
    word = "I" if bits == 32 else "Q"
    header = _read(read_at, 16, 36 if bits == 32 else 48, "ELF header")
    e_type, machine = struct.unpack_from(end + "HH", header, 0)
    phoff, = struct.unpack_from(end + word, header, 12 if bits == 32 else 16)
    off = 26 if bits == 32 else 38  # e_phentsize, after e_flags and e_ehsize
    phentsize, phnum = struct.unpack_from(end + "HH", header, off)
    want = 32 if bits == 32 else 56
    segments: list[tuple[int, int, int, int]] = []  # (type, offset, vaddr, filesz)
    if phnum:
        if phentsize < want or phnum > MAX_PHNUM:
            raise ElfError(f"bad program headers ({phnum} of {phentsize} bytes)")
        table = _read(read_at, phoff, phentsize * phnum, "program headers")
        for i in range(phnum):
            base = i * phentsize
            if bits == 32:
                p_type, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(
                    end + "IIIII", table, base)
            else:
                p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(
                    end + "IIQQQQ", table, base)
            segments.append((p_type, p_offset, p_vaddr, p_filesz))
    interpreter = None
    for p_type, p_offset, _, p_filesz in segments:
        if p_type == PT_INTERP:
            if p_filesz > MAX_INTERP:
                raise ElfError("PT_INTERP is too long")
            raw = _read(read_at, p_offset, p_filesz, "PT_INTERP")
            interpreter = raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            break
    go = any(_go_note(read_at, off, size, end) for kind, off, _, size in segments
             if kind == PT_NOTE)
    dynamic = [(o, s) for kind, o, _, s in segments if kind == PT_DYNAMIC]
    if not dynamic:
        return ElfInfo(bits, big, e_type, machine, interpreter, go=go)
    d_offset, d_size = dynamic[0]
    d_size = min(d_size, MAX_DYNAMIC)
    entry = 8 if bits == 32 else 16
    table = _read(read_at, d_offset, d_size - d_size % entry, "dynamic section")
    fmt = end + ("ii" if bits == 32 else "qQ")
    tags: list[tuple[int, int]] = []
    for i in range(0, len(table), entry):
        tag, value = struct.unpack_from(fmt, table, i)
        if tag == DT_NULL:
            break
        tags.append((tag, value))
    strtab = next((v for t, v in tags if t == DT_STRTAB), None)
    if strtab is None:
        return ElfInfo(bits, big, e_type, machine, interpreter, dynamic=True, go=go)
    str_offset = _to_offset(strtab, segments)

    def string(index: int) -> str:
        data = read_at(str_offset + index, MAX_STRING) if index >= 0 else b""
        if b"\0" not in data:
            raise ElfError("a dynamic string runs past its table")
        return data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")

    needed = [string(v) for t, v in tags if t == DT_NEEDED][:MAX_NEEDED]
    rpath = [p for t, v in tags if t == DT_RPATH for p in string(v).split(":") if p]
    runpath = [p for t, v in tags if t == DT_RUNPATH for p in string(v).split(":") if p]
    soname = next((string(v) for t, v in tags if t == DT_SONAME), None)
    return ElfInfo(bits, big, e_type, machine, interpreter, tuple(needed), tuple(rpath),
                   tuple(runpath), soname, True, go)


def _to_offset(address: int, segments: list[tuple[int, int, int, int]]) -> int:
    """The file offset of a virtual address, through the PT_LOAD segment holding it."""
    for p_type, p_offset, p_vaddr, p_filesz in segments:
        if p_type == PT_LOAD and p_vaddr <= address < p_vaddr + p_filesz:
            return address - p_vaddr + p_offset
    raise ElfError(f"DT_STRTAB address {address:#x} is in no loaded segment")


def _go_note(read_at: ReadAt, offset: int, size: int, end: str) -> bool:
    """Whether a PT_NOTE segment holds a note named "Go" (Go's build id note)."""
    data = read_at(offset, min(size, MAX_NOTES))
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, _ = struct.unpack_from(end + "III", data, pos)
        pos += 12
        name = data[pos:pos + namesz]
        if name.rstrip(b"\0") == b"Go":
            return True
        pos += (namesz + 3) & ~3
        pos += (descsz + 3) & ~3
    return False
