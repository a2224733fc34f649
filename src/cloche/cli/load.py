"""``cloche load -i FILE``: images from an OCI archive or a docker-archive (plain or
compressed, told apart by content) into the store, as ``docker load``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cloche.cli._common import parse_platform, root_option


@click.command("load")
@click.option("-i", "--input", "source", type=click.Path(dir_okay=False, path_type=Path),
              help="Archive to read (default: standard input).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing.")
@click.option("--platform", help="For an archive holding an index, the platform to load.")
@root_option
def command(source: Path | None, quiet: bool, platform: str | None, root: Path | None) -> None:
    """Load images from a tar archive."""
    from cloche import api
    from cloche.oci.reference import Reference

    plat = parse_platform(platform)
    loaded = api.load(source if source is not None else sys.stdin.buffer, platform=plat,
                      root=root)
    if quiet:
        return
    for item in loaded:
        if item.names:
            for name in item.names:
                click.echo(f"Loaded image: {Reference.parse(name).familiar}")
        else:
            click.echo(f"Loaded image ID: {item.image.config_digest}")
