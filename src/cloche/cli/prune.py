"""``cloche prune``: remove build cache, as ``docker builder prune`` does."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cloche.cli._common import check_root, human_size, parse_duration, parse_size, root_option
from cloche.errors import ConfigError


@click.command("prune")
@click.option("-a", "--all", "everything", is_flag=True,
              help="Remove all build cache, not only what no stored image uses.")
@click.option("--keep-storage", help="Keep this much cache (e.g. 10GB), least recent goes first.")
@click.option("--filter", "filters", multiple=True, help="until=DURATION (e.g. until=24h): "
              "only cache not used for that long.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@root_option
def command(everything: bool, keep_storage: str | None, filters: tuple[str, ...], force: bool,
            root: Path | None) -> None:
    """Remove build cache: step records, their snapshots, unused layers and cache mounts."""
    from cloche import api
    from cloche.cli._rootless import enter_user_namespace

    enter_user_namespace(required=False)  # a user's build trees: see cli/_rootless.py

    until = None
    for item in filters:
        key, _, value = item.partition("=")
        if key != "until" or not value:
            raise ConfigError(f"--filter {item!r}: only until=DURATION is supported")
        try:
            until = parse_duration(value)
        except ValueError as err:
            raise ConfigError(f"--filter {item!r}: {err}") from None
    try:
        keep = parse_size(keep_storage) if keep_storage else None
    except ValueError as err:
        raise ConfigError(f"--keep-storage: {err}") from None
    if not force:  # as `docker builder prune`: ask; without a terminal to ask, refuse
        what = "all build cache" if everything else "build cache no stored image uses"
        if not sys.stdin.isatty():
            raise ConfigError(f"cloche prune removes {what} and asks first, but there is no "
                              "terminal to ask", hint="confirm with -f/--force")
        click.confirm(f"This removes {what}. Continue?", abort=True)
    check_root(root)  # a mistyped --root fails with its path
    report = api.prune(root=root, everything=everything, until=until, keep_storage=keep)
    click.echo(f"Deleted {report.records_removed} cache records")
    click.echo(f"Total reclaimed space: {human_size(report.bytes_freed)}")
