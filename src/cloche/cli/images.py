"""``cloche images``: the images in the local store, as ``docker images`` lists them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cloche.cli._common import check_root, human_age, human_size, root_option


@click.command("images")
@click.argument("repository", required=False)
@click.option("-a", "--all", "show_all", is_flag=True,
              help="Show all images (the store keeps no intermediate images: the same list).")
@click.option("--digests", is_flag=True, help="Show the manifest digests.")
@click.option("-f", "--filter", "filters", multiple=True,
              help="reference=PATTERN, dangling=true|false, before=IMAGE, since=IMAGE, "
                   "label=KEY[=VALUE] (repeatable, as `docker images --filter`).")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("--no-trunc", is_flag=True, help="Show full image IDs.")
@click.option("--format", "fmt", default="table", show_default=True,
              help="table, json (one object per line), or a Go template with Docker's "
                   "fields: .Repository, .Tag, .ID, .Digest, .CreatedSince, .CreatedAt, .Size.")
@root_option
def command(repository: str | None, show_all: bool, digests: bool, filters: tuple[str, ...],
            quiet: bool, no_trunc: bool, fmt: str, root: Path | None) -> None:
    """List images in the local store: name, tag, image ID, created, size (as Docker counts
    it: what the layers' files take)."""
    from cloche import api
    from cloche.cli._imagefilters import apply_filters
    from cloche.oci.reference import Reference

    check_root(root)
    rows = apply_filters(api.images(root=root), filters, root)
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
    if fmt != "table":
        from cloche.cli._gotemplate import TemplateError, render

        try:
            lines = [render(fmt.removeprefix("table "), _fields(r, no_trunc)) for r in rows]
        except TemplateError as e:
            raise click.UsageError(f"--format: {e}") from None
        for line in lines:
            click.echo(line)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 3, 0, 0))
    columns = ["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"]
    if not digests:
        columns.remove("DIGEST")
    for column in columns:
        table.add_column(column, no_wrap=True)
    for r in rows:
        cells = [r.repository, r.tag, r.digest,
                 r.image_id if no_trunc else r.image_id.split(":", 1)[1][:12],
                 human_age(r.created), human_size(r.size) if r.size is not None else "N/A"]
        if not digests:
            del cells[2]
        table.add_row(*cells)
    Console(width=200, soft_wrap=True).print(table)


def _fields(row: Any, no_trunc: bool) -> dict[str, str]:
    """A row as `docker images --format` templates see it (every field a string)."""
    from cloche.cli._common import parse_time

    when = parse_time(row.created)
    return {"Repository": row.repository, "Tag": row.tag, "Digest": row.digest,
            "ID": row.image_id if no_trunc else row.image_id.split(":", 1)[1][:12],
            "CreatedSince": human_age(row.created),
            "CreatedAt": when.strftime("%Y-%m-%d %H:%M:%S %z %Z") if when else "",
            "Size": human_size(row.size) if row.size is not None else "N/A"}
