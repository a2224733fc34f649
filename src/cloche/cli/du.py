"""``cloche du``: what the store and the build cache take on disk, in the shape of
``docker system df`` (``-v``: ``docker system df -v``), then the cache's parts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cloche.cli._common import check_root, human_age, human_size, root_option

if TYPE_CHECKING:
    from cloche.engine.pipeline import DiskUsage


@click.command("du")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.option("-v", "--verbose", is_flag=True,
              help="List every image and build cache entry (as docker system df -v).")
@root_option
def command(fmt: str, verbose: bool, root: Path | None) -> None:
    """Show disk usage: images, build cache records, snapshots, cache mounts, rewritten
    layers."""
    from cloche import api
    from cloche.cli._rootless import enter_user_namespace

    enter_user_namespace(required=False)  # a user's build trees: see cli/_rootless.py

    check_root(root)  # a mistyped --root fails with its path
    usage = api.disk_usage(root=root, verbose=verbose)
    if fmt == "json":
        click.echo(json.dumps(usage.to_dict(), indent=2))
        return
    if verbose:
        _verbose(usage)
        return
    _table([("TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"),
            ("Images", str(usage.image_total), str(usage.image_active),
             human_size(usage.image_size), _share(usage.image_reclaimable, usage.image_size)),
            ("Build Cache", str(usage.cache_total), str(usage.cache_active),
             human_size(usage.cache_bytes), _share(usage.cache_reclaimable, usage.cache_bytes))])
    click.echo()
    rows = [("Image blobs (as stored)", f"{usage.images}", human_size(usage.image_bytes)),
            ("Build cache records", f"{usage.records}", ""),
            ("  layers only the cache uses", "", human_size(usage.cache_layer_bytes)),
            ("  step snapshots", f"{usage.step_snapshots}", human_size(usage.step_snapshot_bytes)),
            ("  base image snapshots", "", human_size(usage.base_snapshot_bytes)),
            ("  RUN cache mounts", "", human_size(usage.cache_mount_bytes)),
            ("  rewritten layers no image holds", f"{usage.rewritten_layers}",
             human_size(usage.rewritten_bytes)),
            ("Build cache total (prune --all frees it)", "", human_size(usage.cache_bytes))]
    width = max(len(r[0]) for r in rows)
    click.echo(f"{'DETAIL':<{width}}  {'COUNT':>6}  SIZE")
    for name, count, size in rows:
        click.echo(f"{name:<{width}}  {count:>6}  {size}")


def _share(part: int, whole: int) -> str:
    """Docker's RECLAIMABLE cell: ``1.2MB (40%)``."""
    return f"{human_size(part)} ({part * 100 // whole if whole else 0}%)"


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("   ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _verbose(usage: DiskUsage) -> None:
    """``docker system df -v``'s sections: every image, then every build cache entry."""
    from cloche.oci.reference import Reference

    def size(n: int | None) -> str:
        return "N/A" if n is None else human_size(n)

    click.echo("Images space usage:\n")
    rows: list[tuple[str, ...]] = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE",
                                    "SHARED SIZE", "UNIQUE SIZE", "ACTIVE")]
    for image in usage.image_rows:
        repo, tag = "<none>", "<none>"
        if image.name is not None:
            ref = Reference.parse(image.name)
            repo, tag = ref.familiar_name, ref.tag or "<none>"
        unique = None if image.size is None or image.shared_size is None \
            else image.size - image.shared_size
        rows.append((repo, tag, image.image_id.split(":", 1)[-1][:12],
                     human_age(image.created), size(image.size), size(image.shared_size),
                     size(unique), "yes" if image.active else "no"))
    _table(rows)
    click.echo(f"\nBuild cache usage: {human_size(usage.cache_bytes)}\n")
    rows = [("CACHE ID", "CACHE TYPE", "SIZE", "LAST USED", "SHARED", "ACTIVE")]
    for entry in usage.cache_rows:
        used = datetime.fromtimestamp(entry.last_used, UTC).isoformat() \
            if entry.last_used else None
        rows.append((entry.id, entry.type, human_size(entry.size), human_age(used),
                     "true" if entry.shared else "false", "yes" if entry.active else "no"))
    _table(rows)
