"""docs/buildx-flags.md stays true: each `docker buildx build` flag it says cloche supports
(yes, partly) is in `cloche build --help`, each it says cloche lacks (no) is not, and every
long flag of `cloche build` is either in the table or named as cloche's own."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from cloche.cli.build import command

DOC = Path(__file__).resolve().parents[1] / "docs" / "buildx-flags.md"


def _table() -> dict[str, str]:
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"^\| `(--[a-z-]+)` \| (yes|partly|no) \|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def _help_flags() -> set[str]:
    out = CliRunner().invoke(command, ["--help"], terminal_width=200).output
    return set(re.findall(r"^\s+(?:-\w, )?(--[a-z][a-z-]*)", out, re.M))


def test_the_table_matches_the_command_line() -> None:
    rows = _table()
    assert len(rows) >= 35, "the table lost rows"
    flags = _help_flags()
    for flag, status in rows.items():
        if status == "no":
            assert flag not in flags, f"{flag} is marked no but cloche build has it"
        else:
            assert flag in flags, f"{flag} is marked {status} but cloche build lacks it"
    own = set(re.findall(r"`(--[a-z-]+)`", DOC.read_text().split("cloche's own flags", 1)[1]))
    unexplained = flags - set(rows) - own - {"--help"}
    assert not unexplained, f"flags of cloche build the table does not list: {unexplained}"
