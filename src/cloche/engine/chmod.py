"""``--chmod`` values of COPY and ADD: octal (``755``, ``0644``) or symbolic (``u+x,g-w``).

BuildKit takes an octal number as the exact permission bits of every copied file and
directory (symlinks keep theirs). Newer BuildKit also accepts the symbolic form of chmod(1),
applied to each file's own mode: clauses separated by commas, each ``[ugoa]*`` then one or
more ``[+-=]`` operations with permissions from ``rwxXst`` or a copy of one class (``g=u``).
An omitted class means ``a``; no umask is involved, because a build must not depend on the
builder's umask. ``X`` adds execute only for directories and files that already have an
execute bit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cloche.errors import ClocheError

__all__ = ["ChmodError", "ChmodSpec", "parse_chmod"]

_WHO_BITS = {"u": 0o4700, "g": 0o2070, "o": 0o1007}
_CLAUSE = re.compile(r"^([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)$")
_OP = re.compile(r"([-+=])([ugo]|[rwxXst]*)")


class ChmodError(ClocheError, ValueError):
    """A --chmod value that is neither octal nor a valid symbolic mode."""

    def __init__(self, value: str, reason: str) -> None:
        super().__init__(f"invalid --chmod value {value!r}: {reason}",
                         hint="use octal like 0755 or symbolic like u+x,g-w")
        self.value = value


@dataclass(frozen=True)
class ChmodSpec:
    """A parsed --chmod; ``apply`` gives the new permission bits for one file."""

    text: str
    octal: int | None = None
    clauses: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()

    def apply(self, mode: int, *, is_dir: bool) -> int:
        """The permission bits (``0o7777`` part) for a file whose current mode is ``mode``."""
        if self.octal is not None:
            return self.octal
        perm = mode & 0o7777
        for who, ops in self.clauses:
            classes = who.replace("a", "ugo") or "ugo"
            for op, what in ops:
                bits = 0
                if what in ("u", "g", "o"):
                    src = (perm >> {"u": 6, "g": 3, "o": 0}[what]) & 0o7
                    for c in classes:
                        bits |= src << {"u": 6, "g": 3, "o": 0}[c]
                else:
                    exec_any = is_dir or bool(perm & 0o111)  # as chmod(1): the mode so far
                    for c in classes:
                        shift = {"u": 6, "g": 3, "o": 0}[c]
                        for p in what:
                            if p == "r":
                                bits |= 0o4 << shift
                            elif p == "w":
                                bits |= 0o2 << shift
                            elif p == "x" or (p == "X" and exec_any):
                                bits |= 0o1 << shift
                            elif p == "s" and c in "ug":
                                bits |= 0o4000 if c == "u" else 0o2000
                            elif p == "t" and c == "o":
                                bits |= 0o1000
                mask = 0
                for c in classes:
                    mask |= _WHO_BITS[c]
                if op == "+":
                    perm |= bits
                elif op == "-":
                    perm &= ~bits
                else:
                    perm = (perm & ~mask) | (bits & mask)
        return perm


def parse_chmod(text: str) -> ChmodSpec:
    """Parse a --chmod value; raises ChmodError with the value and the reason."""
    value = text.strip()
    if not value:
        raise ChmodError(text, "empty")
    if value.isascii() and value.isdigit():
        if any(c in "89" for c in value):
            raise ChmodError(text, "not an octal number")
        number = int(value, 8)
        if number > 0o7777:
            raise ChmodError(text, "more than 4 octal digits of permission bits")
        return ChmodSpec(value, octal=number)
    clauses = []
    for clause in value.split(","):
        m = _CLAUSE.match(clause)
        if m is None:
            raise ChmodError(text, f"cannot parse {clause!r}")
        clauses.append((m.group(1), tuple(_OP.findall(m.group(2)))))
    return ChmodSpec(value, clauses=tuple(clauses))
