"""The ELF reader against binutils' readelf on this machine's files, on crafted and hostile
input; the image tree (whiteouts, opaque folders, links inside the root) on crafted layers."""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloche.explainer.elf import ElfError, parse_elf_bytes
from cloche.explainer.imagefs import MAX_LINKS, ImageFS
from cloche.oci.image import Layer
from tests.fixtures.services import require_tool

# -- the ELF reader ---------------------------------------------------------------------------


def _host_elf_files(per_folder: int = 25) -> list[Path]:
    found = []
    for folder in ("/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/sbin"):
        taken = 0
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if taken >= per_folder:
                break
            if not entry.is_file(follow_symlinks=False) or entry.stat().st_size > 50 << 20:
                continue
            with open(entry.path, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    found.append(Path(entry.path))
                    taken += 1
    return found


def _readelf(path: Path) -> tuple[str | None, list[str], list[str], str | None]:
    out = subprocess.run(["readelf", "-ldW", str(path)], capture_output=True, text=True,
                         env={"LC_ALL": "C"}, check=True).stdout
    interp = re.search(r"\[Requesting program interpreter: (.*)\]", out)
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.*)\]", out)
    runpath = [p for m in re.findall(r"\(RUNPATH\)\s+Library runpath: \[(.*)\]", out)
               for p in m.split(":") if p]
    soname = re.search(r"\(SONAME\)\s+Library soname: \[(.*)\]", out)
    return (interp.group(1) if interp else None, needed, runpath,
            soname.group(1) if soname else None)


def test_the_reader_agrees_with_readelf_on_this_machines_files() -> None:
    require_tool("/usr/bin/readelf", "apt-get install binutils")
    files = _host_elf_files()
    assert len(files) > 30
    dynamic = 0
    for path in files:
        info = parse_elf_bytes(path.read_bytes())
        interp, needed, runpath, soname = _readelf(path)
        assert (info.interpreter, list(info.needed), list(info.runpath), info.soname) == \
            (interp, needed, runpath, soname), path
        assert info.architecture == "amd64" and info.bits == 64 and not info.big_endian
        dynamic += bool(info.needed)
    assert dynamic > 10


def _elf32_be(interp: bytes, needed: list[bytes]) -> bytes:
    """A 32-bit big-endian (MIPS) ELF: header, 3 program headers (PT_LOAD over the file,
    PT_INTERP, PT_DYNAMIC), the interpreter string, a string table, a dynamic section."""
    phoff, phnum = 52, 3
    interp_off = phoff + 32 * phnum
    strtab = b"\0" + b"".join(n + b"\0" for n in needed)
    str_off = interp_off + len(interp) + 1
    dyn_off = str_off + len(strtab)
    dyn_off += -dyn_off % 4
    entries, pos = [], 1
    for n in needed:
        entries.append((1, pos))  # DT_NEEDED
        pos += len(n) + 1
    entries += [(5, 0x1000 + str_off), (10, len(strtab)), (0, 0)]  # STRTAB (vaddr), STRSZ
    dynamic = b"".join(struct.pack(">ii", t, v) for t, v in entries)
    size = dyn_off + len(dynamic)
    header = b"\x7fELF" + bytes([1, 2, 1, 0]) + bytes(8) + struct.pack(
        ">HHIIIIIHHHHHH", 2, 8, 1, 0x1000, phoff, 0, 0, 52, 32, phnum, 0, 0, 0)
    ph = struct.pack(">IIIIIIII", 1, 0, 0x1000, 0x1000, size, size, 5, 0x1000)
    ph += struct.pack(">IIIIIIII", 3, interp_off, 0, 0, len(interp) + 1, 0, 4, 1)
    ph += struct.pack(">IIIIIIII", 2, dyn_off, 0x1000 + dyn_off, 0, len(dynamic), 0, 6, 4)
    body = header + ph + interp + b"\0" + strtab
    return body + bytes(dyn_off - len(body)) + dynamic


def test_a_32_bit_big_endian_file() -> None:
    data = _elf32_be(b"/lib/ld.so.1", [b"libc.so.6", b"libm.so.6"])
    info = parse_elf_bytes(data)
    assert (info.bits, info.big_endian, info.architecture) == (32, True, "mips")
    assert info.interpreter == "/lib/ld.so.1" and info.needed == ("libc.so.6", "libm.so.6")
    assert info.is_executable


def test_truncated_and_hostile_files_raise_elf_error_only() -> None:
    data = Path("/bin/ls").read_bytes()
    for cut in list(range(0, 200, 3)) + [1024, 4096, len(data) // 2]:
        try:
            parse_elf_bytes(data[:cut])
        except ElfError:
            pass
    huge_phnum = bytearray(data[:64])
    huge_phnum[56:58] = struct.pack("<H", 0xFFFF)
    with pytest.raises(ElfError, match="program headers"):
        parse_elf_bytes(bytes(huge_phnum))
    with pytest.raises(ElfError):
        parse_elf_bytes(b"\x7fELF" + bytes([9, 9]) + bytes(58))
    # a DT_STRTAB pointing nowhere, a string running off the end
    bad = bytearray(_elf32_be(b"/lib/ld.so.1", [b"libc.so.6"]))
    strtab_at = bytes(bad).rfind(struct.pack(">i", 5))
    bad[strtab_at + 4:strtab_at + 8] = struct.pack(">i", 0x7FFF0000)
    with pytest.raises(ElfError, match="no loaded segment"):
        parse_elf_bytes(bytes(bad))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=600))
def test_random_bytes_after_the_magic_never_crash(tail: bytes) -> None:
    for head in (b"\x7fELF\x02\x01\x01", b"\x7fELF\x01\x02\x01"):
        try:
            parse_elf_bytes(head + tail)
        except ElfError:
            pass


# -- the image tree ---------------------------------------------------------------------------


def _layer(*members: tuple[str, str, object]) -> Layer:
    """A layer from (kind, name, arg): file (content), dir, link (target), hard (target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, arg in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = arg if isinstance(arg, bytes) else str(arg).encode()
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, str(arg)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, str(arg)
            tar.addfile(info)
    return Layer.from_tar_bytes(buf.getvalue())


def test_whiteouts_and_opaque_folders_hide_files_and_are_remembered() -> None:
    fs = ImageFS.read([
        _layer(("dir", "tmp", None), ("file", "tmp/big", b"x" * 5000),
               ("dir", "cache", None), ("file", "cache/a", b"a" * 100),
               ("file", "cache/b", b"b" * 200), ("file", "root/.npmrc", "token")),
        _layer(("file", "tmp/.wh.big", b""), ("file", "cache/.wh..wh..opq", b""),
               ("file", "cache/new", b"n"), ("file", "root/.wh..npmrc", b"")),
    ], secret_path=lambda p: p.endswith(".npmrc"))
    assert "tmp/big" not in fs.nodes and "tmp" in fs.nodes
    assert sorted(p for p in fs.nodes if p.startswith("cache/")) == ["cache/new"]
    deletions = {d.path: d for d in fs.deletions}
    assert (deletions["tmp/big"].size, deletions["tmp/big"].layer) == (5000, 1)
    assert deletions["tmp/big"].from_layers == (0,)
    assert (deletions["cache/*"].size, deletions["cache/*"].files) == (300, 2)
    assert deletions["root/.npmrc"].secret and not deletions["tmp/big"].secret


def test_links_resolve_inside_the_root_and_loops_stop() -> None:
    chain = [("link", f"l{i}", f"l{i + 1}") for i in range(MAX_LINKS + 1)]
    fs = ImageFS.read([_layer(
        ("dir", "etc", None), ("file", "etc/passwd", "root:x:0:0::/:/bin/sh\n"),
        ("link", "escape", "/../../../../etc/passwd"), ("link", "rel", "../../etc"),
        ("link", "a", "b"), ("link", "b", "a"), ("link", "self", "self/x"),
        ("hard", "etc/passwd2", "etc/passwd"),
        *chain, ("file", f"l{MAX_LINKS + 1}", "end"),
    )])
    assert fs.resolve("/escape") == "etc/passwd"
    assert fs.resolve("/rel/passwd") == "etc/passwd"
    assert fs.text("/escape") == b"root:x:0:0::/:/bin/sh\n"
    assert fs.resolve("/a") is None and fs.resolve("/self") is None
    assert fs.resolve(f"/l{MAX_LINKS + 1 - MAX_LINKS}") == f"l{MAX_LINKS + 1}"  # 40 links
    assert fs.resolve("/l0") is None  # 41 links: a loop as far as the kernel is concerned
    assert fs.resolve("/a", follow=False) == "a"
    found = fs.get("/etc/passwd2")
    assert found is not None and found[1].text is not None
    assert fs.resolve("/etc/passwd/x") is None  # a file is no folder


def test_elf_files_are_read_while_the_layer_streams(tmp_path: Path) -> None:
    ls = Path("/bin/ls").read_bytes()
    fs = ImageFS.read([_layer(("dir", "bin", None), ("file", "bin/ls", ls),
                              ("file", "bin/script", "#!/bin/bash -e\necho\n"),
                              ("file", "lib/libfake.so.1", b"\x7fELF\x02\x01garbage"))],
                      scratch=tmp_path)
    elf = fs.nodes["bin/ls"].elf
    assert elf is not None and elf.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert fs.nodes["bin/script"].head == b"#!/bin/bash -e"
    assert fs.nodes["lib/libfake.so.1"].elf is None
    assert fs.nodes["lib/libfake.so.1"].elf_error
    assert list(tmp_path.iterdir()) == []  # the spool is gone
