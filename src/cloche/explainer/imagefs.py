"""An image's merged file system, read from its layers without extracting them.

``ImageFS.read(layers)`` walks the layer tars in order and keeps an in-memory index
path -> ``Node`` (the layer that put it there, type, mode, size, link target), applying
whiteouts and opaque markers as overlayfs would; what a later layer deletes is remembered as a
``Deletion`` (its bytes still ship in the earlier layer). File contents are read only where a
check needs them, while the tar streams past: the ELF headers of candidate executables and
libraries (through a bounded spool, see ``_ForwardSpool``), a script's first line, small
configuration files (/etc/passwd, ld.so.conf...) and the head of files named like keys.

Paths are the tar's cleaned relative names ("usr/bin/app"); ``resolve`` walks them as the
kernel would inside the image's root, links followed one component at a time (no recursion,
at most 40 links), never leaving the root.
"""

from __future__ import annotations

import bisect
import fnmatch
import posixpath
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from cloche.explainer.elf import ELF_MAGIC, ElfError, ElfInfo, parse_elf
from cloche.fs.tarentry import EntryType, TarEntry
from cloche.layers.reader import LayerReader
from cloche.oci.image import Layer

__all__ = ["Deletion", "ImageFS", "Node", "MAX_LINKS"]

MAX_LINKS = 40                  # the kernel's limit (MAXSYMLINKS)
MAX_ELF_SPOOL = 1 << 30         # an ELF file bigger than this is not read past its first GiB
SPOOL_IN_MEMORY = 8 << 20
MAX_TEXT = 256 << 10            # a configuration file read whole
MAX_KEY_FILE = 64 << 10
HEAD = 256

_LIBRARY = re.compile(r"\.so(\.[0-9.]+)?$")
_TEXT_FILES = ("etc/passwd", "etc/group", "etc/ld.so.conf", "etc/ld.so.conf.d/*",
               "etc/ld-musl-*.path", "etc/os-release", "usr/lib/os-release")
_KEY_NAMES = ("*.pem", "*.key", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "*.p8")
PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")


@dataclass
class Node:
    type: EntryType
    mode: int
    size: int
    layer: int
    uid: int = 0
    gid: int = 0
    linkname: str = ""
    elf: ElfInfo | None = None
    elf_error: str | None = None
    head: bytes = b""             # a script's first line, else an executable's first bytes
    text: bytes | None = None     # a small configuration file, whole
    private_key: bool = False

    @property
    def is_dir(self) -> bool:
        return self.type is EntryType.DIR

    @property
    def is_file(self) -> bool:
        return self.type in (EntryType.FILE, EntryType.HARDLINK)


@dataclass(frozen=True)
class Deletion:
    """What a whiteout (or an opaque directory) in ``layer`` hid: ``size`` bytes in ``files``
    regular files, written by ``from_layers``; ``secret`` when one looked like a secret."""

    path: str
    layer: int
    size: int
    files: int
    from_layers: tuple[int, ...]
    secret: bool = False
    largest: tuple[str, ...] = ()


@dataclass
class ImageFS:
    nodes: dict[str, Node] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)
    deletions: list[Deletion] = field(default_factory=list)
    _sorted: list[str] | None = None

    # -- reading ------------------------------------------------------------------------

    @classmethod
    def read(cls, layers: Iterable[Layer], *, scratch: Path | None = None,
             secret_path: Callable[[str], bool] | None = None) -> ImageFS:
        """The merged tree of ``layers`` (bottom first). ``scratch``: where a big ELF file's
        spool may go. ``secret_path``: a predicate naming secret-looking paths, for
        deletions."""
        fs = cls()
        for index, layer in enumerate(layers):
            with layer.open_uncompressed(verify=False) as stream:
                for entry, content in LayerReader(stream, decompress=False):
                    fs._add(index, entry, content, scratch, secret_path)
        return fs

    def _add(self, layer: int, entry: TarEntry, content: BinaryIO | None,
             scratch: Path | None, secret_path: Callable[[str], bool] | None) -> None:
        path = entry.path
        if not path:
            return
        if entry.is_opaque:
            self._hide(entry.parent, layer, below=layer, whole=False, secret_path=secret_path)
            return
        if entry.is_whiteout:
            self._hide(entry.whiteout_target, layer, below=layer, whole=True,
                       secret_path=secret_path)
            return
        old = self.nodes.get(path)
        if old is not None and not (old.is_dir and entry.type is EntryType.DIR):
            self._remove(path, below=layer + 1, whole=True)  # replaced
        self._parents(path, layer)
        node = Node(entry.type, entry.mode, entry.size, layer, entry.uid, entry.gid,
                    entry.linkname)
        if entry.type is EntryType.HARDLINK:
            target = self.nodes.get(entry.linkname)
            if target is not None and target.is_file:
                node.size = 0  # the bytes are counted once, at the target
                node.elf, node.head, node.text = target.elf, target.head, target.text
                node.private_key = target.private_key
        elif entry.type is EntryType.FILE and content is not None:
            _sniff(path, node, content, scratch)
        if old is not None and old.is_dir and entry.type is EntryType.DIR:
            old.mode, old.uid, old.gid, old.layer = entry.mode, entry.uid, entry.gid, layer
        else:
            self.nodes[path] = node
            self.children.setdefault(posixpath.dirname(path), set()).add(path)
        self._sorted = None

    def _parents(self, path: str, layer: int) -> None:
        parent = posixpath.dirname(path)
        missing = []
        while parent and parent not in self.nodes:
            missing.append(parent)
            parent = posixpath.dirname(parent)
        for p in reversed(missing):
            self.nodes[p] = Node(EntryType.DIR, 0o755, 0, layer)
            self.children.setdefault(posixpath.dirname(p), set()).add(p)

    def _remove(self, path: str, *, below: int, whole: bool
                ) -> tuple[int, int, list[tuple[int, str]], set[int], list[str]]:
        """Remove ``path`` (``whole``) or its contents, keeping entries of layers >= below.
        Returns (bytes, files, [(size, path)], layers, removed paths)."""
        size = files = 0
        sizes: list[tuple[int, str]] = []
        layers: set[int] = set()
        removed: list[str] = []
        stack = [path] if whole else list(self.children.get(path, ()))
        while stack:
            p = stack.pop()
            node = self.nodes.get(p)
            if node is None or node.layer >= below:
                continue
            stack.extend(self.children.get(p, ()))
            if node.is_file and node.size:
                size += node.size
                files += 1
                sizes.append((node.size, p))
                layers.add(node.layer)
            removed.append(p)
        gone = set(removed)
        for p in reversed(removed):  # children before their directory
            node = self.nodes.get(p)
            if node is not None and node.is_dir and any(
                    c not in gone for c in self.children.get(p, ())):
                gone.discard(p)
                continue  # a directory keeping newer children stays
            self.nodes.pop(p, None)
            self.children.get(posixpath.dirname(p), set()).discard(p)
            if not self.children.get(p):
                self.children.pop(p, None)
        return size, files, sizes, layers, removed

    def _hide(self, path: str, layer: int, *, below: int, whole: bool,
              secret_path: Callable[[str], bool] | None) -> None:
        if whole and path not in self.nodes:
            return
        size, files, sizes, layers, removed = self._remove(path, below=below, whole=whole)
        if not removed:
            return
        secret = secret_path is not None and any(secret_path(p) for p in removed)
        sizes.sort(reverse=True)
        self.deletions.append(Deletion(path if whole else path + "/*", layer, size, files,
                                       tuple(sorted(layers)), secret,
                                       tuple(p for _, p in sizes[:5])))
        self._sorted = None

    # -- looking things up ----------------------------------------------------------------

    def resolve(self, path: str, *, follow: bool = True) -> str | None:
        """``path`` (absolute or relative to the root) resolved inside the image: each link
        followed where the kernel would, absolute targets restarting at the root, '..'
        stopping there; None when a component is missing, not a directory, or more than
        40 links are met (a loop)."""
        todo = [c for c in path.split("/") if c not in ("", ".")]
        todo.reverse()  # a stack: the next component last
        current: list[str] = []
        links = 0
        while todo:
            part = todo.pop()
            if part == "..":
                if current:
                    current.pop()
                continue
            candidate = "/".join(current + [part])
            node = self.nodes.get(candidate)
            if node is None:
                return None
            if node.type is EntryType.SYMLINK and (todo or follow):
                links += 1
                if links > MAX_LINKS:
                    return None
                target = node.linkname
                if target.startswith("/"):
                    current = []
                todo.extend(reversed([c for c in target.split("/") if c not in ("", ".")]))
                continue
            if todo and not node.is_dir:
                return None
            current.append(part)
        return "/".join(current)

    def get(self, path: str, *, follow: bool = True) -> tuple[str, Node] | None:
        """The node at ``path`` after resolving its links (the root has none)."""
        resolved = self.resolve(path, follow=follow)
        if not resolved:
            return None
        node = self.nodes.get(resolved)
        return (resolved, node) if node is not None else None

    def is_dir(self, path: str) -> bool:
        resolved = self.resolve(path)
        return resolved == "" or (resolved is not None and resolved in self.nodes
                                  and self.nodes[resolved].is_dir)

    def text(self, path: str) -> bytes | None:
        found = self.get(path)
        return found[1].text if found is not None else None

    def files(self) -> Iterator[tuple[str, Node]]:
        for path in self._paths():
            node = self.nodes[path]
            if node.is_file:
                yield path, node

    def dirs(self) -> Iterator[str]:
        for path in self._paths():
            if self.nodes[path].is_dir:
                yield path

    def _paths(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.nodes)
        return self._sorted

    def tree_size(self, path: str) -> tuple[int, int]:
        """Bytes and regular files at or under ``path``."""
        paths = self._paths()
        size = files = 0
        node = self.nodes.get(path)
        if node is not None and node.is_file:
            return node.size, 1
        prefix = path + "/"
        start = bisect.bisect_left(paths, prefix)
        for p in paths[start:]:
            if not p.startswith(prefix):
                break
            n = self.nodes[p]
            if n.is_file:
                size += n.size
                files += 1
        return size, files

    def glob(self, pattern: str) -> list[str]:
        """The paths (no link followed) matching a pattern of ``fnmatch`` components."""
        parts = pattern.split("/")
        level = [""]
        for part in parts:
            nxt = []
            for base in level:
                for child in sorted(self.children.get(base, ())):
                    if fnmatch.fnmatchcase(posixpath.basename(child), part):
                        nxt.append(child)
            level = nxt
        return level


def _sniff(path: str, node: Node, content: BinaryIO, scratch: Path | None) -> None:
    name = posixpath.basename(path)
    if any(fnmatch.fnmatchcase(path, p) for p in _TEXT_FILES) and node.size <= MAX_TEXT:
        node.text = content.read(node.size)
        return
    candidate = bool(node.mode & 0o111) or bool(_LIBRARY.search(name))
    if candidate and node.size >= 4:
        head = content.read(HEAD if node.size > 64 else node.size)
        if head[:4] == ELF_MAGIC:
            spool = _ForwardSpool(head, content, min(node.size, MAX_ELF_SPOOL), scratch)
            try:
                node.elf = parse_elf(spool.read_at)
            except (ElfError, OSError) as err:
                node.elf_error = str(err)
            finally:
                spool.close()
        elif head[:2] == b"#!":
            node.head = head.split(b"\n", 1)[0]
        else:
            node.head = head[:16]  # neither ELF nor a script: exec fails (ENOEXEC)
        return
    if node.size <= MAX_KEY_FILE and any(fnmatch.fnmatchcase(name, p) for p in _KEY_NAMES):
        node.private_key = bool(PRIVATE_KEY.search(content.read(8192)))


class _ForwardSpool:
    """Random reads over a forward-only stream: what was read is kept (in memory, then in a
    scratch file), and a read past it reads the stream on, up to ``limit`` bytes."""

    def __init__(self, head: bytes, stream: BinaryIO, limit: int, scratch: Path | None) -> None:
        self._file = tempfile.SpooledTemporaryFile(
            max_size=SPOOL_IN_MEMORY, dir=str(scratch) if scratch is not None else None)
        self._file.write(head)
        self._have = len(head)
        self._stream = stream
        self._limit = limit

    def read_at(self, offset: int, size: int) -> bytes:
        end = min(offset + size, self._limit)
        while self._have < end:
            chunk = self._stream.read(min(1 << 20, end - self._have))
            if not chunk:
                break
            self._file.seek(self._have)
            self._file.write(chunk)
            self._have += len(chunk)
        if offset >= self._have:
            return b""
        self._file.seek(offset)
        return self._file.read(min(end, self._have) - offset)

    def close(self) -> None:
        self._file.close()
