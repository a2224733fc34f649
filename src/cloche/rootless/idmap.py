"""The caller's subordinate ids (/etc/subuid, /etc/subgid) and the maps made of them.

A line of those files is ``NAME_OR_UID:START:COUNT``; a user may have several lines. The
namespace maps id 0 to the caller and ids 1 and up, in file order, to the whole ranges. An image's
files use ids up to 65534 (nobody), so the ranges must hold at least 65535 ids together.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloche.errors import SandboxError

SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"
NEEDED = 65536  # ids 0..65535 inside: 0 is the caller, 65535 subordinate ids
RANGE = "100000-165535"


class RootlessError(SandboxError):
    """The host does not let this user build without root; the hint says what to change."""


@dataclass(frozen=True)
class IdMap:
    """The lines of a uid_map or gid_map: (inside, outside, count)."""

    lines: tuple[tuple[int, int, int], ...]

    @property
    def size(self) -> int:
        return sum(count for _, _, count in self.lines)

    def args(self) -> list[str]:
        """The arguments newuidmap/newgidmap take after the pid."""
        return [str(v) for line in self.lines for v in line]


def ranges(path: str, user: str, uid: int) -> list[tuple[int, int]]:
    """The (start, count) ranges ``path`` gives ``user`` (named or by number), in file order."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    except OSError as err:
        raise RootlessError(f"cannot read {path}: {err.strerror}") from None
    found = []
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (user, str(uid)):
            continue
        if fields[1].isdigit() and fields[2].isdigit() and int(fields[2]) > 0:
            found.append((int(fields[1]), int(fields[2])))
    return found


def id_map(path: str, user: str, own: int, kind: str) -> IdMap:
    """The map for ``kind`` ("uid" or "gid"): 0 to ``own``, then the subordinate ranges.
    Raises RootlessError naming the command that fixes a missing or too small range."""
    fix = f"usermod --add-subuids {RANGE} --add-subgids {RANGE} {user}"
    found = ranges(path, user, own)
    if not found:
        raise RootlessError(
            f"building as {user} (uid {own}) needs subordinate {kind}s, and {path} has none "
            "for this user",
            hint=f"as root, run: {fix}   (see docs/rootless.md; or run cloche as root)")
    lines = [(0, own, 1)]
    inside = 1
    for start, count in found[:300]:  # the kernel takes 340 lines
        if inside + count > (1 << 32) - 1:
            break
        lines.append((inside, start, count))
        inside += count
    result = IdMap(tuple(lines))
    if result.size < NEEDED:
        raise RootlessError(
            f"{path} gives {user} {result.size - 1} subordinate {kind}s; an image's files "
            f"need {NEEDED - 1} (ids 1 to {NEEDED - 1}) besides the user's own",
            hint=f"as root, give the user a range of {NEEDED}: {fix}")
    return result
