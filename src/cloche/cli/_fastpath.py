"""A no-op rebuild without starting the engine: the CLI's answer when nothing changed.

A rebuild whose inputs are those of a build that just finished has one answer, that build's
image. The engine finds it too, step by step through its cache, but a Python program pays for
its imports first (about 0.2 s here, where BuildKit's daemon answers in 0.1 s). So when a
``cloche build`` ends, the CLI keeps a record keyed by a fingerprint of everything the result
depends on; the next ``cloche build`` with the same fingerprint prints that record and exits.

The fingerprint hashes:
- every build option (their ``repr``: context, Dockerfile text or path, target, build args,
  labels, tags, platform, network, entitlements, limits, secret and ssh ids, never a secret's
  value, which BuildKit's cache ignores as well);
- the Dockerfile's and its ignore files' bytes;
- the context's listing by find (path, device, inode, size, mtime, ctime, mode, owner of every
  entry: the stat stamps the build cache itself trusts);
- the store's ``index.json`` (a base image pulled again, re-tagged or removed changes it);
- cloche's own code (name, size and mtime of each module) and the environment variables that
  reach a build (``CLOCHE_*``, proxies).

Only plain builds into the store take part: no ``--no-cache``, ``--pull``, ``-o``,
``--push`` or ``--metadata-file``, a local context directory, and no ``ADD`` of a URL or a Git
repository (remote content can change under an unchanged Dockerfile). A build records nothing
when an entry of its context changed within the timestamp granularity before it listed the
context (git's "racy clean" problem: a second write in the same tick would keep the stamp).
The records live in the store (``fastpath/``, owner-only like the rest of it), at most
``MAX_RECORDS`` of them; ``cloche prune`` may delete them at any time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

import cloche

if TYPE_CHECKING:
    from cloche.engine import Listing

FORMAT = 1
AREA = "fastpath"
MAX_RECORDS = 256
MAX_FILE = 16 << 20  # a Dockerfile, an ignore file or the store's index larger than this: no fast path
# A second write within the timestamp granularity could keep an entry's stamp: entries this
# recent (in seconds) keep a build from being recorded; 2.1 s where timestamps are whole seconds.
RACY_WINDOW = 0.1
RACY_WINDOW_COARSE = 2.1
_REMOTE_ADD = re.compile(rb"(?im)^\s*add\b[^\n]*(://|[\w-]+@[\w.-]+:)")
_ENV = re.compile(r"^(CLOCHE_.*|(?i:https?_proxy|ftp_proxy|no_proxy|all_proxy))$")


def _code_stamp() -> bytes:
    """Name, size and mtime of every module of cloche: an edited cloche misses."""
    out: list[str] = [getattr(cloche, "__version__", "")]
    stack = [Path(cloche.__file__).parent]
    while stack:  # cloche's own package: a fixed, shallow tree
        with os.scandir(stack.pop()) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_dir(follow_symlinks=False) and entry.name != "__pycache__":
                    stack.append(Path(entry.path))
                elif entry.name.endswith(".py"):
                    st = entry.stat(follow_symlinks=False)
                    out.append(f"{entry.path} {st.st_size} {st.st_mtime_ns}")
    return "\n".join(out).encode()


def regular_bytes(path: Path) -> bytes | None:
    """The content of ``path`` if it is a regular file (not a link, FIFO or device: the
    fast path must never block on one) of at most MAX_FILE bytes, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE + 1)
        return data if len(data) <= MAX_FILE else None
    finally:
        os.close(fd)


def _file_bytes(path: Path) -> bytes:
    data = regular_bytes(path)
    if data is not None:
        return b"regular\0" + data
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return b"absent"
    except OSError as e:
        return f"error {e.errno}".encode()
    return f"special {st.st_mode} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}".encode()


@dataclass(frozen=True)
class Inputs:
    """What the CLI knows of a build before it starts, for ``probe``."""

    options_repr: str
    context: Path
    dockerfile: Path | None  # None: the text came from stdin (it is in options_repr)
    listing_digest: str
    store: Path


class FastPath:
    """One build's fingerprint: ``replay`` answers from a record, ``record`` writes one."""

    def __init__(self, inputs: Inputs, listing: Listing) -> None:
        self.inputs = inputs
        self.listing = listing  # for the racy check once the build is done
        self.area = inputs.store / AREA
        self._started = time.monotonic()

    def _key(self) -> str:
        i = self.inputs
        h = hashlib.sha256()
        parts: list[bytes] = [
            f"cloche-fastpath {FORMAT}".encode(), _code_stamp(), i.options_repr.encode(),
            str(i.context).encode(), i.listing_digest.encode(),
            _file_bytes(i.context / ".dockerignore"), _file_bytes(i.store / "index.json"),
            json.dumps(sorted((k, v) for k, v in os.environ.items() if _ENV.match(k))).encode()]
        if i.dockerfile is not None:
            parts += [str(i.dockerfile).encode(), _file_bytes(i.dockerfile),
                      _file_bytes(Path(f"{i.dockerfile}.dockerignore"))]
        for part in parts:
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
        return h.hexdigest()

    def replay(self, progress: str, iidfile: str | None) -> bool:
        """Answer from a record of this fingerprint, as the build would have: True when done."""
        try:
            path = self.area / f"{self._key()}.json"
            record = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return False
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            return False
        if iidfile:
            from cloche.fs.outfile import write_output_file

            write_output_file(iidfile, str(record["image_id"]).encode(), what="the image ID file",
                              flag="--iidfile")
        if progress == "quiet":  # docker build -q: the image ID
            click.echo(str(record["image_id"]))
            return True
        lines = [*record["lines"], f"built {record['digest']} ({record['size']}) in "
                 f"{time.monotonic() - self._started:.1f}s{record['names']}"]
        sys.stderr.write("".join(f"{line}\n" for line in lines))
        sys.stderr.flush()
        return True

    def record(self, *, digest: str, image_id: str, size: str, names: str,
               lines: Iterable[str], racy: bool) -> None:
        """Keep this build's answer for its fingerprint (computed now, after the build: the
        store's index then holds the names the build gave)."""
        if racy:
            return
        doc = {"format": FORMAT, "digest": digest, "image_id": image_id, "size": size,
               "names": names, "lines": list(lines)}
        try:
            self.area.mkdir(mode=0o700, exist_ok=True)
            path = self.area / f"{self._key()}.json"
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, path)
            _trim(self.area)
        except OSError:
            pass  # a record is an optimisation: a store that cannot keep one builds normally


def _trim(area: Path) -> None:
    with os.scandir(area) as entries:
        records = [(e.stat(follow_symlinks=False).st_mtime, e.path) for e in entries
                   if e.name.endswith(".json")]
    for _, path in sorted(records)[:-MAX_RECORDS]:
        try:
            os.unlink(path)
        except OSError:
            pass


def remote_sources(dockerfile_text: bytes) -> bool:
    """Whether a Dockerfile may ADD a URL or a Git repository (content outside the inputs)."""
    return _REMOTE_ADD.search(dockerfile_text) is not None


def racy(stamps: Iterable[str], listed_at: float) -> bool:
    """Whether an entry changed so shortly before ``listed_at`` (wall-clock seconds) that a
    second change in the same timestamp tick would keep its stamp. ``stamps`` are find's
    (device inode size mtime ctime mode uid gid type)."""
    for stamp in stamps:
        fields = stamp.split(" ")
        for text in fields[3:5]:
            window = RACY_WINDOW_COARSE if text.rstrip("0").endswith(".") or "." not in text \
                else RACY_WINDOW
            try:
                if float(text) >= listed_at - window:
                    return True
            except ValueError:
                return True
    return False
