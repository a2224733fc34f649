"""Differential testing against the Docker engine's BuildKit.

Each case folder holds a Dockerfile and its context; the Dockerfile starts with ``ARG BASE``
and builds FROM ${BASE}, a busybox-static image both builders pull from a loopback registry.
The case is built twice, by ``DOCKER_BUILDKIT=1 /usr/bin/docker build`` and by ``cloche
build``; both images are unpacked by umoci (a third party, so neither side's unpacking is
trusted) and compared: every path with its type, mode, owner, content hash and link target,
the image config, and the history's created_by/empty_layer entries.

A ``build-args`` file in a case folder holds ``K=V`` lines; a ``target`` file names --target.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

CASES = Path(__file__).parent / "cases"

# Config keys compared; everything cloche and BuildKit write for a Dockerfile.
CONFIG_KEYS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir",
               "Labels", "StopSignal", "Healthcheck", "OnBuild", "Shell", "ArgsEscaped")


@dataclass(frozen=True)
class Case:
    name: str
    path: Path

    @property
    def build_args(self) -> dict[str, str]:
        f = self.path / "build-args"
        if not f.exists():
            return {}
        return dict(line.split("=", 1) for line in f.read_text().splitlines() if line.strip())

    def _current_buildkit_lines(self) -> list[list[str]]:
        f = self.path / "current-buildkit"
        if not f.exists():
            return []
        lines = [line.split("#", 1)[0].split() for line in f.read_text().splitlines()]
        return [words for words in lines if words]

    @property
    def current_buildkit(self) -> dict[str, str]:
        """Paths whose mode current BuildKit sets differently from the Docker engine's v0.8
        (read in BuildKit's source; cloche follows current BuildKit): a ``current-buildkit``
        file of ``PATH MODE`` lines, ``#`` comments allowed."""
        return {w[0]: w[1] for w in self._current_buildkit_lines() if len(w) == 2}

    @property
    def current_buildkit_owners(self) -> dict[str, str]:
        """Folders whose entries (the folder and all below it) current BuildKit owns otherwise
        than v0.8: ``PATH owner UID:GID`` lines of the ``current-buildkit`` file."""
        return {w[0]: w[2] for w in self._current_buildkit_lines()
                if len(w) == 3 and w[1] == "owner"}

    @property
    def target(self) -> str | None:
        f = self.path / "target"
        return f.read_text().strip() if f.exists() else None


def cases() -> list[Case]:
    return [Case(p.name, p) for p in sorted(CASES.iterdir()) if (p / "Dockerfile").exists()]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


# busybox's `id` output. A RUN's supplementary groups hold its primary group in current
# BuildKit (executor/oci ensureAdditionalGids, as containerd), so `id` lists it under groups=;
# v0.8 does not add it. The kernel keeps the groups sorted, and `id` prints them so.
_ID_LINE = re.compile(rb"(uid=\d+(?:\([^)]*\))? gid=(\d+)(\([^)]*\))?)(?: groups=(\S+))?")


def current_buildkit_id_lines(data: bytes) -> bytes:
    """``data`` with each busybox ``id`` line as current BuildKit's RUN prints it."""
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        m = _ID_LINE.fullmatch(line)
        if m is None:
            continue
        gid = m.group(2)
        groups = m.group(4).split(b",") if m.group(4) else []
        if any(g.split(b"(")[0] == gid for g in groups):
            continue
        groups.append(gid + (m.group(3) or b""))
        groups.sort(key=lambda g: int(g.split(b"(")[0]))
        lines[i] = m.group(1) + b" groups=" + b",".join(groups)
    return b"\n".join(lines)


def tree_manifest(root: Path, *, id_lines: bool = False) -> dict[str, tuple]:
    """Every path under root: (type, mode, uid, gid, content sha256 | link target | rdev).
    ``id_lines``: small files' busybox ``id`` lines read as current BuildKit writes them."""
    entries: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            st = full.lstat()
            rel = "/" + str(full.relative_to(root))
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                detail = ("link", os.readlink(full))
            elif stat.S_ISREG(st.st_mode):
                data = full.read_bytes()
                if id_lines and len(data) <= 4096:
                    data = current_buildkit_id_lines(data)
                detail = ("file", hashlib.sha256(data).hexdigest(), len(data))
            elif stat.S_ISDIR(st.st_mode):
                detail = ("dir",)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                detail = ("dev", os.major(st.st_rdev), os.minor(st.st_rdev))
            else:
                detail = ("other", stat.S_IFMT(st.st_mode))
            entries[rel] = (*detail, oct(mode), st.st_uid, st.st_gid)
    return entries


def unpack(image_ref: str, workdir: Path, *, id_lines: bool = False) -> tuple[dict[str, tuple], dict]:
    """Copy an image (any skopeo transport) to an OCI layout, unpack it with umoci.

    Returns the tree manifest (``id_lines`` as ``tree_manifest``) and the raw config JSON.
    """
    layout = workdir / "layout"
    run(["skopeo", "copy", "-q", image_ref, f"oci:{layout}:img"])
    bundle = workdir / "bundle"
    run(["umoci", "unpack", "--image", f"{layout}:img", str(bundle)])
    # The config as the builder wrote it (a copy to an OCI layout would drop Docker's keys).
    config = json.loads(run(["skopeo", "inspect", "--raw", "--config", image_ref]).stdout)
    return tree_manifest(bundle / "rootfs", id_lines=id_lines), config


def normal_config(config: dict) -> dict:
    inner = config.get("config") or {}
    return {k: inner[k] for k in CONFIG_KEYS if inner.get(k) not in (None, [], {}, "", False)}


# Debian's docker.io (20.10) embeds BuildKit v0.8. Later BuildKit, whose behaviour cloche
# follows, added --chown/--chmod/--parents to COPY/ADD history lines and prints HEALTHCHECK with
# %+v (and a StartInterval field), writes the value an ``ARG X`` takes from a global ARG, and
# lists a parent stage's ARGs in a child stage's ``RUN |N K=V`` prefix; those spellings are
# normalised away before comparing (tests/engine/test_history.py checks cloche's own).
_NEWER_COPY_FLAGS = re.compile(r" --(?:chown|chmod)=\S+| --parents")


def _normal_created_by(text: str) -> str:
    if text.startswith(("COPY ", "ADD ")):
        return _NEWER_COPY_FLAGS.sub("", text)
    if text.startswith("HEALTHCHECK "):
        return "HEALTHCHECK"
    if text.startswith("RUN |"):
        count, rest = text[5:].split(" ", 1)
        return "RUN " + rest.split(" ", int(count))[-1]
    if text.startswith("ARG "):
        return "ARG " + " ".join(word.split("=", 1)[0] for word in text[4:].split(" "))
    return text


def normal_history(config: dict, skip: int) -> list[tuple[str, bool]]:
    """(created_by, empty_layer) of the entries after the base image's ``skip`` entries."""
    return [(_normal_created_by(h.get("created_by", "")), bool(h.get("empty_layer")))
            for h in config.get("history", [])[skip:]]


def as_current_buildkit(theirs: dict[str, tuple], modes: dict[str, str]) -> dict[str, tuple]:
    """The Docker engine's tree with the modes current BuildKit gives (``Case.current_buildkit``).
    An entry that is missing or already has that mode is an error: the case file is stale."""
    out = dict(theirs)
    for path, mode in modes.items():
        entry = out.get(path)
        if entry is None or entry[-3] == oct(int(mode, 8)):
            raise AssertionError(f"current-buildkit: {path} is missing or has mode {mode} "
                                 "already in the Docker engine's image")
        out[path] = (*entry[:-3], oct(int(mode, 8)), *entry[-2:])
    return out


def as_current_buildkit_owners(theirs: dict[str, tuple],
                               owners: dict[str, str]) -> dict[str, tuple]:
    """The Docker engine's tree with the owners current BuildKit gives below the folders of
    ``Case.current_buildkit_owners``. A folder whose entries all have that owner already (or
    which is missing) is an error: the case file is stale."""
    out = dict(theirs)
    for folder, owner in owners.items():
        uid, gid = (int(n) for n in owner.split(":"))
        below = [p for p in out if p == folder or p.startswith(folder.rstrip("/") + "/")]
        changed = [p for p in below if out[p][-2:] != (uid, gid)]
        if not changed:
            raise AssertionError(f"current-buildkit: {folder} is missing or owned {owner} "
                                 "already in the Docker engine's image")
        for path in changed:
            out[path] = (*out[path][:-2], uid, gid)
    return out


def diff_trees(ours: dict[str, tuple], theirs: dict[str, tuple]) -> list[str]:
    problems = []
    for path in sorted(set(ours) | set(theirs)):
        if path not in ours:
            problems.append(f"missing in cloche: {path} {theirs[path]}")
        elif path not in theirs:
            problems.append(f"extra in cloche:   {path} {ours[path]}")
        elif ours[path] != theirs[path]:
            problems.append(f"differs: {path}\n   cloche:   {ours[path]}\n   buildkit: {theirs[path]}")
    return problems


def _blob(layout: Path, digest: str) -> Path:
    algorithm, hexa = digest.split(":", 1)
    return layout / "blobs" / algorithm / hexa
