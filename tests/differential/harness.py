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
import tarfile
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

    @property
    def current_buildkit(self) -> dict[str, str]:
        """Paths whose mode current BuildKit sets differently from the Docker engine's v0.8
        (read in BuildKit's source; cloche follows current BuildKit): a ``current-buildkit``
        file of ``PATH MODE`` lines, ``#`` comments allowed."""
        f = self.path / "current-buildkit"
        if not f.exists():
            return {}
        lines = [line.split("#", 1)[0].split() for line in f.read_text().splitlines()]
        return {words[0]: words[1] for words in lines if words}

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


def tree_manifest(root: Path) -> dict[str, tuple]:
    """Every path under root: (type, mode, uid, gid, content sha256 | link target | rdev)."""
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
                detail = ("file", hashlib.sha256(full.read_bytes()).hexdigest(), st.st_size)
            elif stat.S_ISDIR(st.st_mode):
                detail = ("dir",)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                detail = ("dev", os.major(st.st_rdev), os.minor(st.st_rdev))
            else:
                detail = ("other", stat.S_IFMT(st.st_mode))
            entries[rel] = (*detail, oct(mode), st.st_uid, st.st_gid)
    return entries


def unpack(image_ref: str, workdir: Path) -> tuple[dict[str, tuple], dict]:
    """Copy an image (any skopeo transport) to an OCI layout, unpack it with umoci.

    Returns the tree manifest and the raw config JSON.
    """
    layout = workdir / "layout"
    run(["skopeo", "copy", "-q", image_ref, f"oci:{layout}:img"])
    bundle = workdir / "bundle"
    run(["umoci", "unpack", "--image", f"{layout}:img", str(bundle)])
    # The config as the builder wrote it (a copy to an OCI layout would drop Docker's keys).
    config = json.loads(run(["skopeo", "inspect", "--raw", "--config", image_ref]).stdout)
    if image_ref.startswith("docker-archive:"):  # the Docker engine's BuildKit
        config = _v08_noop_layers_as_empty(layout, config)
    return tree_manifest(bundle / "rootfs"), config


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


# Docker 20.10's BuildKit (v0.8) keeps a layer for a step that changes nothing, where current
# BuildKit records the step as ``empty_layer`` and ships no layer (which cloche follows):
# - the Docker engine's image exporter (moby builder/builder-next/exporter/writer.go,
#   normalizeLayersAndHistory) has BuildKit's "empty gzip layer -> EmptyLayer" loop commented
#   out ("TODO: fixme"), so e.g. ``WORKDIR /tmp`` on an existing directory ships an empty tar;
#   BuildKit's own exporter (exporter/containerimage/writer.go) drops it;
# - v0.8's runc executor leaves the parent of the /etc/hosts and /etc/resolv.conf mount stubs
#   with a new mtime, so ``RUN true`` ships a layer holding only ``etc/``; current BuildKit's
#   MountStubsCleaner restores the parent's timestamps (moby/buildkit#3148) and the overlay
#   differ then finds nothing.
# Only layers that change nothing but directory mtimes are dropped: no entries, or only
# directories already present below with the same mode and owner. Applied to BuildKit's side
# only, so an empty or mtime-only layer that cloche writes still fails the comparison.
def _v08_noop_layers_as_empty(layout: Path, config: dict) -> dict:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]).read_text())
    below: dict[str, tuple] = {}
    noop: list[bool] = []
    for layer in manifest["layers"]:
        changed = False
        with tarfile.open(_blob(layout, layer["digest"]), "r:*") as tar:
            for member in tar:
                name = member.name[2:] if member.name.startswith("./") else member.name
                path = "/" + name.strip("/")
                base = path.rsplit("/", 1)[-1]
                if base.startswith(".wh."):
                    changed = True
                    parent = path.rsplit("/", 1)[0]
                    gone = parent + "/" if base == ".wh..wh..opq" else (
                        parent.rstrip("/") + "/" + base[4:])
                    for known in [k for k in below if k == gone or k.startswith(gone.rstrip("/") + "/")]:
                        if known != parent:
                            del below[known]
                    continue
                meta = (member.type, member.mode & 0o7777, member.uid, member.gid)
                if not (member.isdir() and below.get(path) == meta):
                    changed = True
                below[path] = meta
        noop.append(not changed)
    history = [dict(h) for h in config.get("history", [])]
    diff_ids = list(config["rootfs"]["diff_ids"])
    layer = kept = 0
    for entry in history:
        if entry.get("empty_layer"):
            continue
        if layer < len(noop) and noop[layer] and layer > 0:  # never the base image's own
            entry["empty_layer"] = True
            del diff_ids[kept]
        else:
            kept += 1
        layer += 1
    return {**config, "history": history, "rootfs": {**config["rootfs"], "diff_ids": diff_ids}}


def _blob(layout: Path, digest: str) -> Path:
    algorithm, hexa = digest.split(":", 1)
    return layout / "blobs" / algorithm / hexa
