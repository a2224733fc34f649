"""``cloche du``: what the store and the build cache take on disk."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cloche.cli._common import check_root, human_size, root_option


@click.command("du")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@root_option
def command(fmt: str, root: Path | None) -> None:
    """Show disk usage: images, build cache records, snapshots, cache mounts."""
    from cloche import api
    from cloche.cli._rootless import enter_user_namespace

    enter_user_namespace(required=False)  # a user's build trees: see cli/_rootless.py

    check_root(root)  # a mistyped --root fails with its path
    usage = api.disk_usage(root=root)
    if fmt == "json":
        click.echo(json.dumps(usage.to_dict(), indent=2))
        return
    rows = [("Images", f"{usage.images}", human_size(usage.image_bytes)),
            ("Build cache records", f"{usage.records}", ""),
            ("  layers only the cache uses", "", human_size(usage.cache_layer_bytes)),
            ("  step snapshots", "", human_size(usage.step_snapshot_bytes)),
            ("  base image snapshots", "", human_size(usage.base_snapshot_bytes)),
            ("  RUN cache mounts", "", human_size(usage.cache_mount_bytes)),
            ("Build cache total (reclaimable)", "", human_size(usage.cache_bytes))]
    width = max(len(r[0]) for r in rows)
    click.echo(f"{'TYPE':<{width}}  {'COUNT':>6}  SIZE")
    for name, count, size in rows:
        click.echo(f"{name:<{width}}  {count:>6}  {size}")
