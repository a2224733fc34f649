"""``cloche images``: the images in the local store, as ``docker images`` lists them."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cloche.cli._common import check_root, human_age, human_size, root_option


@click.command("images")
@click.argument("repository", required=False)
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("--no-trunc", is_flag=True, help="Show full image IDs.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="table, or json (one object per line, as Docker).")
@root_option
def command(repository: str | None, quiet: bool, no_trunc: bool, fmt: str,
            root: Path | None) -> None:
    """List images in the local store: name, tag, image ID, created, size."""
    from cloche import api
    from cloche.oci.reference import Reference

    check_root(root)
    rows = api.images(root=root)
    if repository:
        wanted = Reference.parse(repository)
        has_tag = ":" in repository.rsplit("/", 1)[-1]
        rows = [r for r in rows if r.repository != "<none>"
                and Reference.parse(r.repository).name == wanted.name
                and (not has_tag or r.tag == wanted.tag)]
    if quiet:
        seen: list[str] = []
        for r in rows:
            shown = r.image_id if no_trunc else r.image_id.split(":", 1)[1][:12]
            if shown not in seen:
                seen.append(shown)
        for shown in seen:
            click.echo(shown)
        return
    if fmt == "json":
        for r in rows:
            click.echo(json.dumps(r.to_dict(), sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 3, 0, 0))
    for column in ("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"):
        table.add_column(column, no_wrap=True)
    for r in rows:
        table.add_row(r.repository, r.tag,
                      r.image_id if no_trunc else r.image_id.split(":", 1)[1][:12],
                      human_age(r.created), human_size(r.size) if r.size is not None else "N/A")
    Console(width=200, soft_wrap=True).print(table)
