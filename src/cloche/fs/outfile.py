"""Files the caller names for cloche to write (``--iidfile``, ``--metadata-file``, ``-o``).

Two rules for all of them:

- An error names the file and the flag that named it (``cannot write the image ID file
  /dev/full (--iidfile): No space left on device``), never a bare errno.
- A regular file appears whole or not at all (``AtomicOutput``): it is written as an anonymous
  O_TMPFILE in the destination's folder (or, where the file system has none, a hidden
  temporary name there) and linked under its name once complete, so a build killed while
  writing leaves nothing under the final name. A destination that exists and is not a
  regular file (``/dev/stdout``, a FIFO, a device) is written in place: renaming a file over
  it would replace the device itself.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import uuid
from pathlib import Path
from types import TracebackType

from cloche.errors import ClocheError

__all__ = ["AtomicOutput", "OutputFileError", "write_output_file"]

_BUFFER = 1 << 20  # bytes gathered before a write(2): a tar comes in 512-byte headers


class OutputFileError(ClocheError):
    """A file the caller named that cannot be written; the message names it and its flag."""

    def __init__(self, what: str, path: str | os.PathLike[str], reason: OSError | str,
                 flag: str | None = None) -> None:
        self.what = what
        self.path = os.fspath(path)
        self.reason = reason
        self.flag = flag
        text = reason if isinstance(reason, str) else (reason.strerror or str(reason))
        where = f"{what} {self.path}" + (f" ({flag})" if flag else "")
        super().__init__(f"cannot write {where}: {text}")

    def with_flag(self, flag: str) -> OutputFileError:
        """The same error naming the flag that gave the file (known to the caller only)."""
        return self if self.flag else OutputFileError(self.what, self.path, self.reason, flag)


def write_output_file(path: str | os.PathLike[str], data: bytes, *, what: str,
                      flag: str | None = None) -> None:
    """Write ``data`` to ``path`` in place, as ``docker build`` writes ``--iidfile``."""
    try:
        with open(path, "wb") as out:
            out.write(data)
    except OSError as err:
        raise OutputFileError(what, path, err, flag) from err


class AtomicOutput:
    """``with AtomicOutput(path, what=..., flag=...) as out: out.write(...)``.

    On a clean exit the file appears under ``path`` (replacing an older one, whose mode it
    keeps); on an exception nothing does. Write errors are raised as ``OutputFileError``.
    """

    def __init__(self, path: str | os.PathLike[str], *, what: str,
                 flag: str | None = None) -> None:
        self.path = os.fspath(path)
        self.what = what
        self.flag = flag
        self._fd = -1
        self._tmp: str | None = None  # a named temporary file (no O_TMPFILE)
        self._final = self.path
        self._in_place = False
        self._buffer = bytearray()

    def _error(self, err: OSError) -> OutputFileError:
        return OutputFileError(self.what, self.path, err, self.flag)

    def __enter__(self) -> AtomicOutput:
        try:
            self._open()
        except OSError as err:
            raise self._error(err) from err
        return self

    def _open(self) -> None:
        try:
            st: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), self.path)
            self._in_place = True
            self._fd = os.open(self.path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
            return
        self._final = os.path.realpath(self.path)  # a link to a file: replace the file
        folder = os.path.dirname(self._final)
        mode = stat.S_IMODE(st.st_mode) if st is not None else None
        try:
            self._fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            self._tmp = self._temporary_name()
            self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                               0o666)
        if mode is not None:
            os.fchmod(self._fd, mode)

    def _temporary_name(self) -> str:
        folder, name = os.path.split(self._final)
        return os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._buffer += data
        if len(self._buffer) >= _BUFFER:
            self.flush()
        return len(data)

    def flush(self) -> None:
        view = memoryview(self._buffer)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as err:
            raise self._error(err) from err
        finally:
            view.release()
        self._buffer.clear()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                self._commit()
        finally:
            os.close(self._fd)
            if self._tmp is not None:
                Path(self._tmp).unlink(missing_ok=True)

    def _commit(self) -> None:
        self.flush()
        if self._in_place:
            return
        try:
            if self._tmp is None:  # an O_TMPFILE: give it a name, then the final one
                self._tmp = self._temporary_name()
                _link_fd(self._fd, self._tmp)
            os.replace(self._tmp, self._final)
            self._tmp = None
        except OSError as err:
            raise self._error(err) from err


_AT_FDCWD = -100
_AT_SYMLINK_FOLLOW = 0x400


def _link_fd(fd: int, name: str) -> None:
    """Give the O_TMPFILE ``fd`` the name ``name``: linkat(2) of /proc/self/fd/N with
    AT_SYMLINK_FOLLOW, as open(2) documents (``os.link`` calls link(2), which would try to
    link the /proc symlink itself and fail with EXDEV)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.linkat(_AT_FDCWD, f"/proc/self/fd/{fd}".encode(), _AT_FDCWD, os.fsencode(name),
                   _AT_SYMLINK_FOLLOW) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), name)
