"""The error hierarchy: one root, typed leaves that carry data.

The library never prints and never exits; the CLI turns a ``ClocheError`` into one message
block and a non-zero exit code. Errors caused by bad input are also ``ValueError``s.
Modules may define narrower leaves of these classes next to the code that raises them.
"""

from __future__ import annotations

from collections.abc import Iterable


class ClocheError(Exception):
    """Root of every error cloche raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        """The full text a person should see, on one or more lines."""
        text = f"error: {self.message}"
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text

    def __str__(self) -> str:
        return self.message


class DockerfileError(ClocheError, ValueError):
    """A Dockerfile that cannot be parsed, typed or planned; points at file, line and column.

    ``line`` and ``column`` are 1-based; ``column`` may be None when only the line is known.
    ``source_line`` is the text of the offending line, used to draw a caret under ``column``.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        source_line: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.file = file
        self.line = line
        self.column = column
        self.source_line = source_line

    def with_location(
        self, *, file: str | None = None, line: int | None = None,
        column: int | None = None, source_line: str | None = None,
    ) -> DockerfileError:
        """Fill in location fields that are still unknown; returns self for chaining."""
        self.file = self.file or file
        self.line = self.line or line
        self.column = self.column or column
        self.source_line = self.source_line or source_line
        return self

    @property
    def location(self) -> str:
        where = self.file or "Dockerfile"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where

    def render(self) -> str:
        lines = [f"error: {self.location}: {self.message}"]
        if self.source_line is not None and self.line is not None:
            gutter = f" {self.line} | "
            lines.append(gutter + self.source_line.rstrip("\n"))
            if self.column is not None:
                lines.append(" " * (len(gutter) + self.column - 1) + "^")
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean X?' hint for a misspelled word, or None when nothing is close."""
    import difflib  # only here: every sandboxed step imports this module

    match = difflib.get_close_matches(word.lower(), [c.lower() for c in choices], n=1, cutoff=0.6)
    if not match:
        return None
    originals = {c.lower(): c for c in choices}
    return f"did you mean {originals[match[0]]!r}?"


class ConfigError(ClocheError, ValueError):
    """A configuration file or command-line option that cannot be used."""


class DigestError(ClocheError, ValueError):
    """A string that is not a valid digest, or bytes that do not match their digest."""


class InvalidReferenceError(ClocheError, ValueError):
    """An image reference that Docker would not accept."""


class UnsafePathError(ClocheError, ValueError):
    """A path in a tar, a context or a rootfs that would escape its root."""


class LayerError(ClocheError, ValueError):
    """A layer tar that cannot be read or applied."""


class StoreError(ClocheError):
    """The local content store failed or is inconsistent."""


class ImageNotFoundError(StoreError, LookupError):
    """No image by that name or digest in the local store."""


class RegistryError(ClocheError):
    """A registry answered with an error, or could not be reached.

    ``status`` is the HTTP status (None for a connection failure), ``codes`` the error codes of
    the distribution spec's error body (``MANIFEST_UNKNOWN``...), ``retryable`` whether trying
    again later could help.
    """

    def __init__(
        self, message: str, *, reference: str | None = None, status: int | None = None,
        codes: tuple[str, ...] = (), retryable: bool = False, hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.reference = reference
        self.status = status
        self.codes = codes
        self.retryable = retryable


class SandboxError(ClocheError):
    """The sandbox for RUN could not be set up (missing privileges, kernel features)."""


class BuildError(ClocheError):
    """A build step failed; carries the stage, the Dockerfile location and the output tail.

    ``line`` to ``end_line`` are the failing instruction's lines; ``source`` is the
    Dockerfile's text when known (the engine sets it), which ``render`` shows around them.
    """

    def __init__(
        self, message: str, *, stage: str | None = None, file: str | None = None,
        line: int | None = None, output_tail: str = "", exit_status: int | None = None,
        hint: str | None = None, end_line: int | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.stage = stage
        self.file = file
        self.line = line
        self.end_line = end_line
        self.output_tail = output_tail
        self.exit_status = exit_status
        self.source: str | None = None

    def excerpt(self) -> list[str]:
        """The failing instruction in its Dockerfile, as BuildKit prints a source location
        (solver/errdefs Source.Print): ``FILE:LINE``, then the instruction's lines marked
        ``>>>`` with two lines around it (four in all for a one-line instruction, taken
        where the file has them), numbered, between dashed rules. Empty without a source."""
        if self.source is None or not self.line:
            return []
        lines = self.source.split("\n")
        start, end = self.line, max(self.end_line or self.line, self.line)
        if start > len(lines):
            return []
        end = min(end, len(lines))
        first, last = start, end
        wanted, added = (4 if end == start else 2), 0
        while added < wanted:
            if first > 1:
                first -= 1
                added += 1
            if last < len(lines):
                last += 1
                added += 1
            added += 1
        out = [f"{self.file or 'Dockerfile'}:{start}", "-" * 20]
        for n in range(first, last + 1):
            mark = ">>>" if start <= n <= end else "   "
            text = lines[n - 1]
            if len(text) > 500:  # a hostile Dockerfile's line: the message stays bounded
                text = text[:500] + "..."
            out.append(f" {n:3d} | {mark} {text}")
        out.append("-" * 20)
        return out

    def render(self) -> str:
        where = ""
        if self.file or self.line:
            where = f"{self.file or 'Dockerfile'}:{self.line}: " if self.line else f"{self.file}: "
        stage = f"[stage {self.stage}] " if self.stage else ""
        lines = [f"error: {where}{stage}{self.message}"]
        if self.output_tail:
            lines.append("output (last lines):")
            lines.extend("  " + ln for ln in self.output_tail.rstrip("\n").splitlines())
        lines.extend(self.excerpt())
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)
