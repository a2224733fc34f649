"""Errors of the image core, narrower leaves of cloche.errors.

Each carries ``source``: the file, layout or reference the bad data came from, so the message
says where to look.
"""

from __future__ import annotations

from cloche.errors import ClocheError


class ImageFormatError(ClocheError, ValueError):
    """A manifest, index, config, layout or archive that is not what the specs allow."""

    def __init__(self, message: str, *, source: str | None = None, hint: str | None = None) -> None:
        super().__init__(f"{source}: {message}" if source else message, hint=hint)
        self.source = source


class BlobNotFoundError(ClocheError, LookupError):
    """A blob that a manifest names but the blob source does not hold."""

    def __init__(self, message: str, *, digest: object = None, source: str | None = None) -> None:
        super().__init__(f"{source}: {message}" if source else message)
        self.digest = digest
        self.source = source


class PlatformNotFoundError(ClocheError, LookupError):
    """An index without an entry for the platform that was asked for."""

    def __init__(self, message: str, *, wanted: str, available: tuple[str, ...] = ()) -> None:
        super().__init__(message,
                         hint=("available: " + ", ".join(available)) if available else None)
        self.wanted = wanted
        self.available = available


class RefNotFoundError(ClocheError, LookupError):
    """No image of that name in an OCI layout or an archive."""

    def __init__(self, message: str, *, name: str, available: tuple[str, ...] = ()) -> None:
        super().__init__(message,
                         hint=("available: " + ", ".join(available)) if available else None)
        self.name = name
        self.available = available
