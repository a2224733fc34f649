"""Goldens recorded from current BuildKit (v0.23.2), and the record both sides are reduced to.

A golden holds what a case's Dockerfile makes on top of its base image, as BuildKit built
it: the entries of each new layer (path, type, mode, owner, size, content hash, link target;
no mtimes), the config keys a Dockerfile sets, the history entries after the base's, the
layer count, and the warnings of BuildKit's lint subrequest (rule, line, message). The base
image is made by cloche from a fixed busybox-static root filesystem; a new layer's file whose
bytes equal a base file's is recorded as ``"content": "base:/path"`` (no hash, no size), so a
golden holds whatever busybox Debian ships. tests/conformance/record.py writes the goldens,
test_goldens.py compares cloche with them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.differential import harness
from tests.fixtures.rootfs import make_busybox_rootfs

BUILDKIT_VERSION = "v0.23.2"
HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]
GOLDENS = HERE / "goldens"
KNOWN = HERE / "known.json"
CASE_DIRS = (PROJECT / "tests" / "differential" / "cases", HERE / "cases")
BASE_NAME = "conformance/busybox:1"
FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z: every entry of the base root filesystem


@dataclass(frozen=True)
class Case(harness.Case):
    """A case folder (differential or conformance) whose Dockerfile builds FROM ${BASE}."""

    @property
    def source(self) -> str:
        return str(self.path.relative_to(PROJECT))

    @property
    def digest(self) -> str:
        """sha256 over the case folder's names, types, modes and contents (not mtimes): a
        golden recorded from other inputs is stale."""
        h = hashlib.sha256()
        for rel, kind, mode, data in _walk(self.path):
            mode = _context_mode(kind, mode)
            h.update(f"{rel}\0{kind}\0{mode:o}\0".encode("utf-8", "surrogateescape"))
            h.update(hashlib.sha256(data).digest())
        return h.hexdigest()

    @property
    def golden(self) -> Path:
        return GOLDENS / f"{self.name}.json"

    def context(self, workdir: Path) -> Path:
        """A copy of the case folder whose modes do not depend on the checkout's umask: git
        keeps only the executable bit, and COPY keeps the mode, so directories are made 0755
        and files 0755 or 0644 (what both builders are given)."""
        dest = workdir / "context" / self.name
        shutil.copytree(self.path, dest, symlinks=True)
        for dirpath, dirnames, filenames in os.walk(dest):
            for name in dirnames + filenames:
                full = Path(dirpath) / name
                if not full.is_symlink():
                    kind = "dir" if full.is_dir() else "file"
                    os.chmod(full, _context_mode(kind, full.lstat().st_mode))
        os.chmod(dest, 0o755)
        return dest


def _context_mode(kind: str, mode: int) -> int:
    if kind == "dir":
        return 0o755
    if kind == "file":
        return 0o755 if mode & 0o111 else 0o644
    return 0


def _walk(root: Path) -> list[tuple[str, str, int, bytes]]:
    """(relative path, kind, mode, content or link target) of every entry, sorted, no-follow."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            st = full.lstat()
            rel = str(full.relative_to(root))
            mode = st.st_mode & 0o7777
            if full.is_symlink():
                out.append((rel, "link", 0, os.readlink(full).encode("utf-8", "surrogateescape")))
            elif full.is_dir():
                out.append((rel, "dir", mode, b""))
            else:
                out.append((rel, "file", mode, full.read_bytes()))
    return sorted(out)


def cases(names: list[str] | tuple[str, ...] = ()) -> list[Case]:
    found: dict[str, Case] = {}
    for folder in CASE_DIRS:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if (path / "Dockerfile").exists():
                if path.name in found:
                    raise AssertionError(f"two cases are named {path.name}")
                found[path.name] = Case(path.name, path)
    if names:
        missing = [n for n in names if n not in found]
        if missing:
            raise AssertionError(f"no such case: {', '.join(missing)}")
        return [found[n] for n in names]
    return list(found.values())


def make_base_rootfs(root: Path) -> Path:
    """tests/fixtures/rootfs.py's busybox rootfs with every mtime set to FIXED_MTIME."""
    make_busybox_rootfs(root)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in dirnames + filenames:
            os.utime(Path(dirpath) / name, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
    os.utime(root, (FIXED_MTIME, FIXED_MTIME))
    return root


def base_contents(root: Path) -> dict[str, str]:
    """sha256 -> the first path (sorted) of a regular file of the base rootfs with those bytes."""
    out: dict[str, str] = {}
    for rel, kind, _mode, data in _walk(root):
        if kind == "file":
            out.setdefault(hashlib.sha256(data).hexdigest(), "/" + rel)
    return out


@dataclass(frozen=True)
class Base:
    """The base image as both builders see it: its layers, history length, file contents."""

    diff_ids: tuple[str, ...]
    history: int
    contents: dict[str, str]


# ---------------------------------------------------------------------------------------------
# OCI layout archives (buildctl --output type=oci, cloche -o type=oci)


class Layout:
    """An OCI layout tar: the single image's manifest, config and layer blobs."""

    def __init__(self, path: Path) -> None:
        self._tar = tarfile.open(path)
        index = self._json("index.json")
        manifest = index["manifests"][0]
        while manifest["mediaType"].endswith(("image.index.v1+json", "manifest.list.v2+json")):
            inner = self._json(_blob_name(manifest["digest"]))["manifests"]
            manifest = next((m for m in inner if m.get("platform", {}).get("os") == "linux"
                             and not m.get("annotations", {}).get(
                                 "vnd.docker.reference.type")), inner[0])
        self.manifest = self._json(_blob_name(manifest["digest"]))
        self.config = self._json(_blob_name(self.manifest["config"]["digest"]))

    def close(self) -> None:
        self._tar.close()

    def _bytes(self, name: str) -> bytes:
        member = self._tar.extractfile(name)
        if member is None:
            raise AssertionError(f"{name} is not a file in the layout")
        return member.read()

    def _json(self, name: str) -> dict:
        return json.loads(self._bytes(name))

    def layer(self, index: int) -> bytes:
        """The uncompressed tar of layer ``index``."""
        desc = self.manifest["layers"][index]
        data = self._bytes(_blob_name(desc["digest"]))
        if data[:2] == b"\x1f\x8b":
            return gzip.decompress(data)
        if data[:4] == b"\x28\xb5\x2f\xfd":
            import zstandard  # type: ignore[import-not-found]

            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
        return data


def _blob_name(digest: str) -> str:
    algorithm, hexa = digest.split(":", 1)
    return f"blobs/{algorithm}/{hexa}"


_TYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir",
          tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char",
          tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}


TEXT_LIMIT = 1024  # a file this small that is UTF-8 text is recorded as text too (diffs)


def _small_text(body: bytes) -> str | None:
    if len(body) > TEXT_LIMIT:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if all(c.isprintable() or c in "\n\t" for c in text) else None


def _name(name: str) -> str:
    name = name.removeprefix("./").strip("/")
    return "/" + name


def layer_entries(data: bytes, contents: dict[str, str]) -> dict[str, dict]:
    """path -> entry of one uncompressed layer tar."""
    entries: dict[str, dict] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            path = _name(member.name)
            base = path.rsplit("/", 1)[-1]
            kind = _TYPES.get(member.type, f"type-{member.type!r}")
            if base == ".wh..wh..opq":
                kind = "opaque"
            elif base.startswith(".wh."):
                kind = "whiteout"
            if kind in ("whiteout", "opaque"):
                # Only the name counts: BuildKit writes mode 0000, cloche 0600; neither is
                # seen in the root filesystem.
                entries[path] = {"type": kind}
                continue
            entry: dict = {"type": kind, "mode": f"{member.mode & 0o7777:04o}",
                           "uid": member.uid, "gid": member.gid}
            if kind == "file":
                f = tar.extractfile(member)
                body = f.read() if f else b""
                digest = hashlib.sha256(body).hexdigest()
                if digest in contents:
                    entry["content"] = "base:" + contents[digest]
                else:
                    entry["size"] = len(body)
                    entry["sha256"] = digest
                    text = _small_text(body)
                    if text is not None:
                        entry["text"] = text
            elif kind == "symlink":
                entry["link"] = member.linkname
            elif kind == "hardlink":
                entry["link"] = _name(member.linkname)
            elif kind in ("char", "block"):
                entry["device"] = [member.devmajor, member.devminor]
            xattrs = sorted(k.removeprefix("SCHILY.xattr.") for k in member.pax_headers
                            if k.startswith("SCHILY.xattr."))
            if xattrs:
                entry["xattrs"] = xattrs
            if path in entries:
                raise AssertionError(f"layer has {path} twice")
            entries[path] = entry
    return dict(sorted(entries.items()))


def image_record(oci_tar: Path, base: Base) -> dict:
    """What a build made on top of ``base``, read from its OCI layout archive."""
    layout = Layout(oci_tar)
    try:
        config = layout.config
        diff_ids = tuple(config["rootfs"]["diff_ids"])
        on_base = diff_ids[:len(base.diff_ids)] == base.diff_ids and bool(base.diff_ids)
        skip = len(base.diff_ids) if on_base else 0
        layers = [layer_entries(layout.layer(i), base.contents)
                  for i in range(skip, len(diff_ids))]
        history = [{"created_by": h.get("created_by", ""),
                    "empty_layer": bool(h.get("empty_layer"))}
                   for h in config.get("history", [])[base.history if on_base else 0:]]
        return {"layer_count": len(diff_ids), "base_layers": skip,
                "config": harness.normal_config(config), "history": history,
                "layers": layers}
    finally:
        layout.close()


# ---------------------------------------------------------------------------------------------
# Lint output (the frontend.lint subrequest's result.txt, as buildctl prints it)

_WARNING = re.compile(r"^WARNING: (?P<rule>\S+)(?: - (?P<url>\S+))?\n(?P<message>.*)\n"
                      r"(?:(?P<file>[^\n:]+):(?P<line>\d+)\n)?", re.M)


def parse_lint(text: str) -> list[dict]:
    """rule, line (0: none) and message of each warning BuildKit's lint subrequest printed."""
    return [{"rule": m["rule"], "line": int(m["line"] or 0), "message": m["message"]}
            for m in _WARNING.finditer(text)]


def sort_warnings(warnings: list[dict]) -> list[dict]:
    return sorted(warnings, key=lambda w: (w["line"], w["rule"], w["message"]))


# ---------------------------------------------------------------------------------------------
# Comparing a record with a golden


def diff_records(ours: dict, golden: dict) -> list[str]:
    """One line per difference between cloche's record and the golden's (same keys)."""
    problems: list[str] = []
    if "error" in golden or "error" in ours:
        if golden.get("error", {}).get("line") != ours.get("error", {}).get("line") \
                or ("error" in golden) != ("error" in ours):
            problems.append(f"error: cloche {ours.get('error')} buildkit {golden.get('error')}")
        said = golden.get("error", {}).get("message", "")
        failed = said.partition("failed to solve: ")[2]
        if failed.startswith("process ") and failed not in ours.get("error", {}).get("message", ""):
            problems.append(f"error message: cloche {ours.get('error')} buildkit {failed!r}")
    if "image" in golden and "image" in ours:
        problems += _diff_image(ours["image"], golden["image"])
    want = golden.get("warnings", [])
    got = ours.get("warnings", [])
    for w in want:
        if w not in got:
            problems.append(f"warning missing in cloche: {_warning(w)}")
    for w in got:
        if w not in want:
            problems.append(f"warning extra in cloche: {_warning(w)}")
    return problems


def _warning(w: dict) -> str:
    return f"{w['rule']} line {w['line']}: {w['message']}"


def _diff_image(ours: dict, golden: dict) -> list[str]:
    problems: list[str] = []
    for key in ("layer_count", "base_layers"):
        if ours[key] != golden[key]:
            problems.append(f"{key}: cloche {ours[key]} buildkit {golden[key]}")
    for key in sorted(set(ours["config"]) | set(golden["config"])):
        a, b = ours["config"].get(key), golden["config"].get(key)
        if a != b:
            problems.append(f"config {key}: cloche {json.dumps(a)} buildkit {json.dumps(b)}")
    if ours["history"] != golden["history"]:
        for i in range(max(len(ours["history"]), len(golden["history"]))):
            a = ours["history"][i] if i < len(ours["history"]) else None
            b = golden["history"][i] if i < len(golden["history"]) else None
            if a != b:
                problems.append(f"history {i}: cloche {_hist(a)} buildkit {_hist(b)}")
    for i in range(max(len(ours["layers"]), len(golden["layers"]))):
        a = ours["layers"][i] if i < len(ours["layers"]) else None
        b = golden["layers"][i] if i < len(golden["layers"]) else None
        if a is None or b is None:
            problems.append(f"layer {i}: only {'buildkit' if a is None else 'cloche'} has it "
                            f"({len(a if a is not None else b or {})} entries)")
            continue
        for path in sorted(set(a) | set(b)):
            if path not in a:
                problems.append(f"layer {i} {path}: missing in cloche {_entry(b[path])}")
            elif path not in b:
                problems.append(f"layer {i} {path}: extra in cloche {_entry(a[path])}")
            elif a[path] != b[path]:
                problems.append(f"layer {i} {path}: cloche {_entry(a[path])} "
                                f"buildkit {_entry(b[path])}")
    return problems


def _hist(h: dict | None) -> str:
    if h is None:
        return "(none)"
    return json.dumps(h["created_by"]) + (" (empty_layer)" if h["empty_layer"] else "")


def _entry(e: dict) -> str:
    return json.dumps(e, sort_keys=True)


def load_known() -> dict[str, list[dict]]:
    """known.json: case -> [{"match": regex of a difference line, "reason": why}]."""
    if not KNOWN.exists():
        return {}
    data = json.loads(KNOWN.read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def apply_known(problems: list[str], known: list[dict]) -> tuple[list[str], list[str]]:
    """The problems no known entry explains, and the known entries that matched nothing."""
    left = []
    used: set[int] = set()
    for line in problems:
        hits = [i for i, k in enumerate(known) if re.search(k["match"], line)]
        used.update(hits)
        if not hits:
            left.append(line)
    stale = [k["match"] for i, k in enumerate(known) if i not in used]
    return left, stale


def make_base(store_root: Path, workdir: Path) -> Base:
    """The base image, imported by cloche as BASE_NAME into the store at ``store_root``."""
    from cloche.ops.importer import import_rootfs
    from cloche.store import Store

    rootfs = make_base_rootfs(workdir / "base-rootfs")
    store = Store.open(store_root)
    import_rootfs(store, rootfs, names=[BASE_NAME])
    config = json.loads(store.image(BASE_NAME).config_bytes)
    return Base(tuple(config["rootfs"]["diff_ids"]), len(config.get("history", [])),
                base_contents(rootfs))
