"""Typed leaves of ``DockerfileError`` raised by the parser.

They carry what the message talks about (the directive, the heredoc name, the word), so that
callers and tests can tell the failures apart without matching message text.
"""

from __future__ import annotations

from cloche.errors import DockerfileError


class DockerfileSyntaxError(DockerfileError):
    """An instruction whose arguments cannot be read (ENV without a value, nested JSON...).

    ``token`` is the piece of text the error is about, when there is one; the parser uses it
    to point the caret at that word on the instruction's first line.
    """

    def __init__(self, message: str, *, token: str | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.token = token


class DirectiveError(DockerfileError):
    """A parser directive (``# escape=``...) that is repeated or has a bad value."""

    def __init__(self, message: str, *, directive: str, value: str | None = None,
                 **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.directive = directive
        self.value = value


class HeredocError(DockerfileError):
    """A heredoc that never ends, or whose delimiter word cannot be read."""

    def __init__(self, message: str, *, name: str | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.name = name


class EmptyDockerfileError(DockerfileError):
    """A Dockerfile with no instruction at all (empty, or only comments and blank lines)."""


class LineTooLongError(DockerfileError):
    """A line longer than BuildKit's scanner accepts (64 KiB)."""
