"""Will it run: every ELF program and library of the final image against the image's files,
and the config's ENTRYPOINT/CMD, USER and WORKDIR.

A dynamic ELF file needs its interpreter (PT_INTERP) in the image, and each DT_NEEDED library
in the loader's search path: DT_RPATH (when there is no DT_RUNPATH), LD_LIBRARY_PATH from the
config's Env, DT_RUNPATH (``$ORIGIN`` is the file's folder), then for glibc the folders of
/etc/ld.so.conf (its ``include`` lines followed) and the defaults (/lib, /usr/lib, /lib64,
/usr/lib64 and the multiarch folders), for musl /etc/ld-musl-ARCH.path or /lib, /usr/local/lib,
/usr/lib. Every path is resolved inside the image (``ImageFS.resolve``: links followed one
component at a time, at most 40).
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import TYPE_CHECKING, NamedTuple

from cloche.explainer.model import Finding, is_test_data
from cloche.explainer.weight import Attribution, clean_created_by

if TYPE_CHECKING:
    from cloche.explainer.elf import ElfInfo
    from cloche.explainer.imagefs import ImageFS, Node
    from cloche.oci.image import Image

__all__ = ["check"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_MULTIARCH = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu",
              "386": "i386-linux-gnu", "arm": "arm-linux-gnueabihf",
              "ppc64le": "powerpc64le-linux-gnu", "s390x": "s390x-linux-gnu",
              "riscv64": "riscv64-linux-gnu", "mips64le": "mips64el-linux-gnuabi64"}
_MUSL_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "386": "i386", "arm": "armhf",
              "ppc64le": "powerpc64le", "s390x": "s390x", "riscv64": "riscv64"}
# the architectures a kernel of the image's architecture also runs
_COMPATIBLE = {"amd64": {"386"}, "arm64": {"arm"}}


def check(image: Image, fs: ImageFS, who: Attribution) -> list[Finding]:
    config = image.config
    env = dict(e.partition("=")[::2] for e in config.env or ())
    arch = config.architecture or ""
    loaders = _loaders(fs)
    out: list[Finding] = []
    entry_path = _entrypoint(image, fs, who, env, out)
    musl_dirs = _musl_dirs(fs, arch)
    glibc_dirs = _glibc_dirs(fs, arch)
    ld_library_path = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
    add = out.append

    for path, node in fs.files():
        elf = node.elf
        if path != entry_path and is_test_data(path):
            continue
        if elf is None:
            if node.elf_error and path == entry_path:
                origin = who.origin(node.layer)
                add(Finding("runtime", "elf-unreadable", f"/{path} (the entrypoint) is not a "
                            f"valid ELF file: {node.elf_error}", path="/" + path,
                            stage=origin.stage, instruction=origin.instruction,
                            line=origin.line))
            continue
        origin = who.origin(node.layer)
        role = " (the entrypoint)" if path == entry_path else ""
        what = "program" if elf.is_executable else "library"
        where = _Where("/" + path, origin.stage, origin.instruction, origin.line)
        elf_arch = elf.architecture
        if arch and elf_arch and elf_arch != arch and elf_arch not in _COMPATIBLE.get(arch, ()):
            add(where.finding("wrong-architecture", f"/{path}{role} is a {elf_arch} "
                              f"{what} in a {arch} image: exec format error",
                              fix=f"build it for {arch} (GOARCH={arch}, or --platform with the "
                            "build stage's FROM --platform=$BUILDPLATFORM and a cross "
                            "compiler)"))
            continue
        if elf.interpreter and elf.is_executable and not (
                elf.soname and elf.soname.startswith(("libc.", "ld-"))):
            if _exists(fs, elf.interpreter) is None:
                add(_no_interpreter(path, role, elf, loaders, where))
                continue
        musl = bool(elf.interpreter and "musl" in elf.interpreter) or (
            not elf.interpreter and bool(loaders.get("musl")) and not loaders.get("glibc"))
        defaults = musl_dirs if musl else glibc_dirs
        for needed in elf.needed:
            if _find_library(fs, path, needed, elf, ld_library_path, defaults) is None:
                add(where.finding("library-missing", f"/{path}{role} needs {needed}, "
                                  "which is in none of "
                                  f"{_dirs_text(elf, ld_library_path, defaults)}",
                                  fix=f"copy {needed} (and what it needs) from the build stage "
                                f"into one of those folders, or link /{path} statically"))
    _user(image, fs, who, out)
    _workdir(image, fs, who, out)
    return out


class _Where(NamedTuple):
    path: str
    stage: str | None
    instruction: str | None
    line: int | None

    def finding(self, rule: str, message: str, *, fix: str) -> Finding:
        return Finding("runtime", rule, message, path=self.path, stage=self.stage,
                       instruction=self.instruction, line=self.line, fix=fix, where="file")


def _loaders(fs: ImageFS) -> dict[str, list[str]]:
    """The dynamic loaders the image has: glibc's ld-linux*/ld64, musl's ld-musl-*."""
    found: dict[str, list[str]] = {"glibc": [], "musl": []}
    for folder in ("lib", "lib64", "usr/lib", "usr/lib64"):
        for path in fs.glob(f"{folder}/ld-*"):
            if fs.get(path) is None:
                continue  # a dangling link
            kind = "musl" if "musl" in path else "glibc"
            found[kind].append("/" + path)
    return found


def _no_interpreter(path: str, role: str, elf: ElfInfo, loaders: dict[str, list[str]],
                    where: _Where) -> Finding:
    interp = elf.interpreter or ""
    libc = "musl" if "musl" in interp else "glibc"
    other = "glibc" if libc == "musl" else "musl"
    if loaders.get(other):
        why = (f"the image has {other} ({', '.join(loaders[other])}), not {libc}: a {libc} "
               "binary cannot start here")
    elif not loaders.get(libc):
        why = "the image has no dynamic loader at all (a static, distroless/static or scratch image)"
    else:
        why = f"the image's loaders are {', '.join(loaders[libc])}"
    message = (f"/{path}{role} is dynamically linked against {libc} (interpreter {interp}) "
               f"but the image has no {interp}: {why}; it fails with `exec: no such file or "
               "directory`")
    if elf.go:
        fix = ("build with CGO_ENABLED=0 (a static Go binary), or ship it on a base with "
               f"{libc} (distroless/base, debian-slim" + (", alpine" if libc == "musl" else "")
               + ")")
    elif libc == "musl":
        fix = (f"copy {interp} (and the libraries it needs) from the build stage, link "
               "statically, or use an alpine-based image")
    else:
        fix = (f"link statically, copy {interp} and the libraries it needs "
               f"({', '.join(elf.needed) or 'none'}) from the build stage, or use a base "
               "image with glibc (distroless/base, debian-slim)")
    return where.finding("interpreter-missing", message, fix=fix)


def _exists(fs: ImageFS, path: str) -> Node | None:
    found = fs.get(path)
    return found[1] if found is not None and found[1].is_file else None


def _find_library(fs: ImageFS, path: str, needed: str, elf: ElfInfo,
                  ld_library_path: list[str], defaults: list[str]) -> str | None:
    if "/" in needed:
        return needed if _exists(fs, needed if needed.startswith("/") else
                                 posixpath.join("/" + posixpath.dirname(path), needed)) else None
    origin = "/" + posixpath.dirname(path)
    folders = [] if elf.runpath else list(elf.rpath)
    folders += ld_library_path + list(elf.runpath) + defaults
    for folder in folders:
        folder = folder.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)
        folder = folder.replace("${LIB}", "lib").replace("$LIB", "lib")
        candidate = posixpath.join(folder if folder.startswith("/") else "/" + folder, needed)
        if _exists(fs, candidate) is not None:
            return candidate
    return None


def _dirs_text(elf: ElfInfo, ld_library_path: list[str], defaults: list[str]) -> str:
    folders = list(dict.fromkeys(([] if elf.runpath else list(elf.rpath)) + ld_library_path
                                 + list(elf.runpath) + defaults))
    return ", ".join(folders[:8]) + (", ..." if len(folders) > 8 else "")


def _glibc_dirs(fs: ImageFS, arch: str) -> list[str]:
    """/etc/ld.so.conf's folders (includes followed, bounded), then the defaults."""
    folders: list[str] = []
    todo = ["/etc/ld.so.conf"]
    seen: set[str] = set()
    while todo and len(seen) < 256:
        conf = todo.pop(0)
        if conf in seen:
            continue
        seen.add(conf)
        text = fs.text(conf)
        if text is None:
            continue
        for raw in text.decode("utf-8", "replace").splitlines()[:4096]:
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("include"):
                for pattern in line.split()[1:]:
                    base = pattern if pattern.startswith("/") else \
                        posixpath.join(posixpath.dirname(conf), pattern)
                    todo.extend("/" + p for p in fs.glob(base.lstrip("/")))
            elif line.startswith("hwcap"):
                continue
            else:
                folders.extend(p for p in re.split(r"[:,\s]+", line) if p.startswith("/"))
    triplet = _MULTIARCH.get(arch)
    if triplet:
        folders += [f"/lib/{triplet}", f"/usr/lib/{triplet}"]
    folders += ["/lib", "/usr/lib", "/lib64", "/usr/lib64"]
    return list(dict.fromkeys(folders))


def _musl_dirs(fs: ImageFS, arch: str) -> list[str]:
    text = fs.text(f"/etc/ld-musl-{_MUSL_ARCH.get(arch, arch)}.path")
    if text is not None:
        return [p for p in re.split(r"[:\n]+", text.decode("utf-8", "replace")) if p.strip()]
    return ["/lib", "/usr/local/lib", "/usr/lib"]


def _history_of(image: Image, who: Attribution, keyword: str) -> tuple[str | None, str | None]:
    history = image.config.history
    for j in range(len(history) - 1, -1, -1):
        text = clean_created_by(history[j].created_by)
        if text.upper().startswith(keyword):
            owner = who.history_owner[j] if j < len(who.history_owner) else None
            return owner, text
    return None, None


def _entrypoint(image: Image, fs: ImageFS, who: Attribution, env: dict[str, str],
                out: list[Finding]) -> str | None:
    """Checks that the command resolves; returns its path in the image (for the ELF
    findings), or None."""
    config = image.config
    entrypoint = tuple(config.entrypoint or ())
    cmd = tuple(config.cmd or ())
    argv = entrypoint + cmd if entrypoint else cmd
    if not argv:
        return None
    which = "ENTRYPOINT" if entrypoint else "CMD"
    stage, instruction = _history_of(image, who, which)
    program = argv[0]
    shell = len(argv) >= 2 and argv[1] == "-c" and program in ("/bin/sh", "/bin/bash")
    form = f"{which} (shell form: {program} -c)" if shell else f"{which} {json.dumps(argv)}"
    workdir = config.working_dir or "/"
    if "/" in program:
        target = program if program.startswith("/") else posixpath.join(workdir, program)
        candidates = [target]
    else:
        path_var = env.get("PATH", DEFAULT_PATH)
        candidates = [posixpath.join(d or ".", program) for d in path_var.split(":")]
    for candidate in candidates:
        found = fs.get(candidate)
        if found is None or not found[1].is_file:
            continue
        resolved, node = found
        if not node.mode & 0o111:
            out.append(Finding("runtime", "entrypoint-not-executable",
                               f"{form}: {candidate} is not executable (mode "
                               f"{node.mode:o}): permission denied", path=candidate, stage=stage,
                               instruction=instruction, where="config",
                               fix=f"RUN chmod +x {candidate} (or COPY --chmod=755)"))
        elif node.elf is None and node.elf_error is None and \
                not node.head.startswith(b"#!"):
            out.append(Finding("runtime", "entrypoint-not-a-program",
                               f"{form}: {candidate} is neither an ELF program nor a script "
                               "(no #! line): exec format error", path=candidate,
                               stage=stage, instruction=instruction, where="config",
                               fix=f"start the script at {candidate} with a #! line, or "
                                   "COPY the built program there"))
        elif node.head.startswith(b"#!"):
            words = node.head[2:].decode("utf-8", "replace").split()
            if words and fs.get(words[0]) is None:
                out.append(Finding("runtime", "entrypoint-interpreter-missing",
                                   f"{form}: {candidate} is a script for {words[0]}, which "
                                   "the image does not have", path=candidate, stage=stage,
                                   instruction=instruction, where="config",
                                   fix=f"install {words[0]} in the image, or run a program "
                                       "that is there"))
        return resolved
    if shell:
        message = (f"{form}: the shell form needs {program}, which the image does not have "
                   "(a distroless or scratch image has no shell)")
        fix = (f"use the exec form: {which} [\"/path/to/program\", \"arg\"...]")
    elif "/" in program:
        message = f"{form}: {candidates[0]} does not exist in the image"
        fix = (f"COPY the program to {candidates[0]}, or fix the path in {which}")
    else:
        message = (f"{form}: {program} is in none of the PATH folders "
                   f"({env.get('PATH', DEFAULT_PATH)})")
        fix = f"use an absolute path in {which}, or install {program}"
    out.append(Finding("runtime", "entrypoint-missing", message,
                       path=candidates[0] if "/" in program else None, stage=stage, instruction=instruction,
                       where="config", fix=fix))
    return None


def _user(image: Image, fs: ImageFS, who: Attribution, out: list[Finding]) -> None:
    user = image.config.user or ""
    if not user:
        return
    name, _, group = user.partition(":")
    stage, instruction = _history_of(image, who, "USER")
    for value, table, what in ((name, "/etc/passwd", "user"), (group, "/etc/group", "group")):
        if not value or value.isdigit():
            continue
        text = fs.text(table)
        names = set()
        if text is not None:
            names = {line.split(":", 1)[0] for line in
                     text.decode("utf-8", "replace").splitlines() if ":" in line}
        if value not in names:
            out.append(Finding("runtime", "user-missing", f"USER {user}: the {what} {value} is "
                               f"not in the image's {table}" +
                               ("" if text is not None else f" (there is no {table})") +
                               ": the container does not start (unable to find user)",
                               stage=stage, instruction=instruction, where="config",
                               fix=f"use a numeric id (USER 65532:65532), or add the {what} "
                                   f"to {table}"))


def _workdir(image: Image, fs: ImageFS, who: Attribution, out: list[Finding]) -> None:
    workdir = image.config.working_dir
    if not workdir or workdir == "/":
        return
    if fs.is_dir(workdir):
        return
    stage, instruction = _history_of(image, who, "WORKDIR")
    out.append(Finding("runtime", "workdir-missing", f"WORKDIR {workdir} is not a folder of "
                       "the image: the runtime creates it as root at start (a non-root USER "
                       "may then not write there)", path=workdir, stage=stage,
                       instruction=instruction, where="config",
                       fix=f"create it in the image: WORKDIR {workdir} in a stage that ships, "
                           f"or RUN mkdir -p {workdir}"))


