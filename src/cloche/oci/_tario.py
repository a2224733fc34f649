"""Tar plumbing for the archive formats: a deterministic streaming writer, and a random-access
index of an uncompressed tar file whose members are opened as windows of the file.

Reading never extracts: a member is read in place, its name confined to the archive (no
absolute names, no ``..``), symbolic and hard links between members (docker save writes
them for shared layers) resolved inside the archive only.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from pathlib import Path
from typing import BinaryIO, cast

from cloche.errors import ClocheError
from cloche.fs.outfile import AtomicOutput
from cloche.oci._streams import WindowReader
from cloche.oci.errors import ImageFormatError


class DestinationError(ClocheError):
    """An archive destination that cannot be written (no such directory, no permission)."""


class TarWriter:
    """Writes a tar stream with normalised headers (mtime 0, root-owned, 0644/0755), so the
    same content always gives the same bytes."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self._tar = tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT)
        self._dirs: set[str] = set()

    def _info(self, name: str, kind: bytes, size: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.size = size
        info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def add_dir(self, name: str) -> None:
        name = name.rstrip("/")
        if name in self._dirs:
            return
        parent = posixpath.dirname(name)
        if parent:
            self.add_dir(parent)
        self._dirs.add(name)
        self._tar.addfile(self._info(name, tarfile.DIRTYPE))

    def add_bytes(self, name: str, data: bytes) -> None:
        self._parents(name)
        self._tar.addfile(self._info(name, tarfile.REGTYPE, len(data)), io.BytesIO(data))

    def add_stream(self, name: str, stream: BinaryIO, size: int) -> None:
        """Copy exactly ``size`` bytes, then read once more so a verifying stream sees its
        end and checks its digest; a longer stream is an error."""
        self._parents(name)
        self._tar.addfile(self._info(name, tarfile.REGTYPE, size), stream)
        if stream.read(1):
            raise ImageFormatError(f"{name}: blob is longer than its declared size {size}")

    def _parents(self, name: str) -> None:
        parent = posixpath.dirname(name)
        if parent:
            self.add_dir(parent)

    def close(self) -> None:
        self._tar.close()

    def abort(self) -> None:
        """Give up without writing the end-of-archive blocks (the output is discarded)."""
        setattr(self._tar, "closed", True)  # noqa: B010 - not in the stubs
        setattr(self._tar.fileobj, "closed", True)  # noqa: B010


class MemberNotFoundError(ImageFormatError, LookupError):
    """An archive without the member a manifest names."""


def clean_member_name(name: str, *, archive: str) -> str:
    """A member name made relative and normal; ImageFormatError when it would escape."""
    cleaned = posixpath.normpath(name)
    if cleaned.startswith("/") or cleaned == ".." or cleaned.startswith("../"):
        raise ImageFormatError(f"path {name!r} escapes the archive", source=archive)
    return cleaned


class TarIndex:
    """The members of an uncompressed tar file, by cleaned name, for reading in place."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._members: dict[str, tarfile.TarInfo] = {}
        try:
            with tarfile.open(self.path, mode="r:") as tar:
                for info in tar:
                    name = clean_member_name(info.name, archive=self.path)
                    self._members[name] = info
        except tarfile.ReadError as e:
            raise ImageFormatError(f"not an uncompressed tar archive: {e}", source=self.path,
                                   hint="decompress it first (cloche reads .tar files in place)"
                                   ) from e
        except FileNotFoundError as e:
            raise ImageFormatError("no such file", source=self.path) from e

    def names(self) -> list[str]:
        return list(self._members)

    def _resolve(self, name: str) -> tarfile.TarInfo:
        """The regular-file member ``name`` leads to, following symbolic links (in any
        component) and hard links, never outside the archive."""
        pending = clean_member_name(name, archive=self.path).split("/")
        resolved = ""
        hops = 0
        while pending:
            part = pending.pop(0)
            candidate = clean_member_name(posixpath.join(resolved, part), archive=self.path)
            info = self._members.get(candidate)
            if info is not None and (info.issym() or (info.islnk() and not pending)):
                hops += 1
                if hops > 32:
                    raise ImageFormatError(f"too many levels of links at {name!r}",
                                           source=self.path)
                base = posixpath.dirname(candidate) if info.issym() else ""
                target = clean_member_name(posixpath.join(base, info.linkname),
                                           archive=self.path)
                pending = target.split("/") + pending
                resolved = ""
                continue
            resolved = candidate
        info = self._members.get(resolved)
        if info is None:
            raise MemberNotFoundError(f"no member {name!r}", source=self.path)
        if not info.isreg():
            raise ImageFormatError(f"member {name!r} is not a regular file", source=self.path)
        return info

    def has(self, name: str) -> bool:
        try:
            self._resolve(name)
            return True
        except ImageFormatError:
            return False

    def size(self, name: str) -> int:
        return self._resolve(name).size

    def open(self, name: str) -> BinaryIO:
        info = self._resolve(name)
        return io.BufferedReader(WindowReader(self.path, info.offset_data, info.size),
                                 1 << 16)

    def read(self, name: str, limit: int = 64 << 20) -> bytes:
        info = self._resolve(name)
        if info.size > limit:
            raise ImageFormatError(f"{name} is larger than {limit} bytes", source=self.path)
        with self.open(name) as f:
            return f.read()


def open_destination(dest: str | Path | BinaryIO) -> tuple[BinaryIO, AtomicOutput | None]:
    """A writable stream for ``dest``: a path is written through ``AtomicOutput`` (returned
    second: whole under its name once ``finish_destination`` says ok, else nothing; a device
    or a pipe written in place), and its errors name the file."""
    if isinstance(dest, (str, Path)):
        out = AtomicOutput(dest, what="the archive").__enter__()
        return cast(BinaryIO, out), out
    return dest, None


def finish_destination(stream: BinaryIO, out: AtomicOutput | None,
                       dest: str | Path | BinaryIO, ok: bool) -> None:
    if out is None:
        stream.flush()
        return
    if ok:
        out.__exit__(None, None, None)
    else:
        out.__exit__(DestinationError, DestinationError("not complete"), None)
