"""``cloche history IMAGE``: an image's history, newest first, as ``docker history`` shows it.

Each entry: the image ID on the newest line (``<missing>`` below it, as Docker shows every
entry of a built or pulled image that is not an image of its own), when it was made, the
instruction (``CREATED BY``, cut to 45 characters unless ``--no-trunc``), the size of its layer
(0B for an entry without one) and its comment. A layer's size is what Docker's layer store
reports for it: the bytes of its files (each file once, hard links not again; a symbolic
link counts its target's length), read from the layer's tar (ops/sizes.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cloche.cli._common import check_root, human_age, human_size, parse_time, root_option

TRUNCATE = 45


@click.command("history")
@click.argument("ref")
@click.option("-H", "--human", type=bool, default=True, show_default=True,
              help="Sizes and dates in human-readable form.")
@click.option("--no-trunc", is_flag=True, help="Do not cut the output.")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("--format", "fmt", help="table (default), json (one object per line), or a Go "
              "template with .ID, .CreatedSince, .CreatedAt, .CreatedBy, .Size, .Comment.")
@root_option
def command(ref: str, human: bool, no_trunc: bool, quiet: bool, fmt: str | None,
            root: Path | None) -> None:
    """Show the history of an image (newest first), as `docker history`."""
    from cloche.ops.sizes import content_size
    from cloche.store import Store
    from cloche.store.root import default_root

    check_root(root)
    store = Store.open(root or default_root())
    image = store.image(ref)
    image_id = str(image.config_digest)
    sizes = iter([content_size(store, layer) for layer in image.layers])
    rows: list[dict[str, Any]] = []
    for entry in image.config.history:
        size = 0 if entry.empty_layer else next(sizes, 0)
        rows.append({"CreatedAt": entry.created or "", "CreatedBy": entry.created_by or "",
                     "Comment": entry.comment or "", "Size": size})
    rows.reverse()
    for i, row in enumerate(rows):
        row["ID"] = (image_id if no_trunc else image_id.split(":", 1)[1][:12]) if i == 0 \
            else "<missing>"
    if quiet:
        for row in rows:
            click.echo(row["ID"])
        return
    shown = [_shown(row, human, no_trunc) for row in rows]
    if fmt == "json":
        for row in shown:
            click.echo(json.dumps(row, sort_keys=True))
        return
    if fmt and fmt != "table":
        from cloche.cli._gotemplate import TemplateError, render

        try:
            lines = [render(fmt.removeprefix("table "), row) for row in shown]
        except TemplateError as e:
            raise click.UsageError(f"--format: {e}") from None
        for line in lines:
            click.echo(line)
        return
    columns = ("IMAGE", "CREATED" if human else "CREATED AT", "CREATED BY", "SIZE", "COMMENT")
    keys = ("ID", "CreatedSince", "CreatedBy", "Size", "Comment")
    # Docker's tabwriter: cells padded by 3, every column at least 10 wide
    widths = [max([len(c)] + [len(str(r[k])) for r in shown]) + 3 for c, k in zip(columns, keys)]
    widths = [max(w, 10) for w in widths]
    click.echo("".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in shown:
        click.echo("".join(str(row[k]).ljust(w) for k, w in zip(keys, widths)).rstrip())


def _shown(row: dict[str, Any], human: bool, no_trunc: bool) -> dict[str, Any]:
    created_by = " ".join(row["CreatedBy"].split()) if not no_trunc else row["CreatedBy"]
    if not no_trunc and len(created_by) > TRUNCATE:
        created_by = created_by[:TRUNCATE - 1] + "…"
    return {"ID": row["ID"],
            "CreatedSince": human_age(row["CreatedAt"]) if human else _rfc3339(row["CreatedAt"]),
            "CreatedAt": _rfc3339(row["CreatedAt"]), "CreatedBy": created_by,
            "Size": human_size(row["Size"]) if human else str(row["Size"]),
            "Comment": row["Comment"]}


def _rfc3339(text: str) -> str:
    """Go's time.RFC3339 of a history time, in local time, whole seconds (as Docker)."""
    when = parse_time(text)
    if when is None:
        return ""
    local = when.astimezone()
    offset = local.strftime("%z")
    zone = "Z" if offset in ("+0000", "-0000") else f"{offset[:3]}:{offset[3:]}"
    return local.strftime("%Y-%m-%dT%H:%M:%S") + zone
