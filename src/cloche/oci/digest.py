"""Content digests as a validated value type (never a bare string).

A ``Digest`` is ``algorithm:hex`` as the OCI image spec defines it; cloche accepts sha256 and
sha512. ``Digester`` hashes a stream incrementally so blobs are verified while they flow.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import BinaryIO

from cloche.errors import DigestError

_HEX_LEN = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"^[a-f0-9]+$")


@dataclass(frozen=True, order=True)
class Digest:
    """A validated ``algorithm:hex`` content digest."""

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        expected = _HEX_LEN.get(self.algorithm)
        if expected is None:
            raise DigestError(f"unsupported digest algorithm {self.algorithm!r} "
                              "(sha256 and sha512 are supported)")
        if len(self.hex) != expected or not _HEX.match(self.hex):
            raise DigestError(f"invalid {self.algorithm} digest {self.hex!r}: "
                              f"want {expected} lower-case hex characters")

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``sha256:...``; raises DigestError for anything else."""
        if not isinstance(text, str) or ":" not in text:
            raise DigestError(f"invalid digest {text!r}: want algorithm:hex")
        algorithm, _, hexpart = text.partition(":")
        return cls(algorithm, hexpart)

    @classmethod
    def from_bytes(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    @classmethod
    def from_stream(cls, stream: BinaryIO, algorithm: str = "sha256",
                    chunk_size: int = 1 << 20) -> tuple[Digest, int]:
        """Digest and size of everything left in ``stream``."""
        digester = Digester(algorithm)
        while chunk := stream.read(chunk_size):
            digester.update(chunk)
        return digester.digest(), digester.size

    @property
    def encoded(self) -> str:
        """The hex part (the OCI spec calls it 'encoded')."""
        return self.hex

    @property
    def short(self) -> str:
        """The first 12 hex characters, as image listings show them."""
        return self.hex[:12]

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


class Digester:
    """Incremental hashing of a stream, counting bytes as it goes."""

    def __init__(self, algorithm: str = "sha256") -> None:
        if algorithm not in _HEX_LEN:
            raise DigestError(f"unsupported digest algorithm {algorithm!r}")
        self.algorithm = algorithm
        self._hash = hashlib.new(algorithm)
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)

    def digest(self) -> Digest:
        return Digest(self.algorithm, self._hash.hexdigest())


def verify(expected: Digest, actual: Digest, what: str = "blob") -> None:
    """Raise DigestMismatchError when the bytes received are not the bytes asked for."""
    if expected != actual:
        raise DigestMismatchError(f"{what} digest mismatch: expected {expected}, got {actual}",
                                  expected=expected, actual=actual)


class DigestMismatchError(DigestError):
    """Bytes whose digest is not the one they were asked for by."""

    def __init__(self, message: str, *, expected: Digest, actual: Digest) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual
