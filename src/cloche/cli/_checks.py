"""How build checks are printed: after a build, and for ``cloche build --check``.

After a build, each warning is one line, ``WARNING: RULE: message (line N)`` (BuildKit's short
form), printed to stderr once the build is done, as buildx lists them at the end. ``--check``
prints what BuildKit's lint subrequest prints (frontend/subrequests/lint): per warning, in
line order, ``WARNING: RULE - URL``, the message and the Dockerfile excerpt, then buildx's
``Check complete, ...`` line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from cloche.engine import events as ev
from cloche.errors import BuildError

if TYPE_CHECKING:
    from cloche.engine.pipeline import CheckReport


def print_build_warnings(events: list[ev.Event], *, plain: bool = False) -> None:
    """The build checks a build raised, one line each, at its end (stderr)."""
    for event in events:
        if isinstance(event, ev.BuildWarning) and event.rule:
            click.echo(f"WARNING: {event.short}", err=True)


def print_check_report(report: CheckReport) -> bool:
    """``--check``'s output (stdout); True when something was found (exit status 1)."""
    for warning in report.warnings:
        head = f"WARNING: {warning.rule}" + (f" - {warning.url}" if warning.url else "")
        click.echo(f"\n{head}\n{warning.message}")
        where = BuildError(warning.message, file=warning.file or report.file,
                           line=warning.line or None, end_line=warning.end_line or None)
        where.source = report.dockerfile
        for line in where.excerpt():
            click.echo(line)
    count = len(report.warnings)
    if count == 0:
        click.echo("Check complete, no warnings found.")
        return False
    found = "1 warning has been found!" if count == 1 else f"{count} warnings have been found!"
    click.echo(f"Check complete, {found}")
    return True
