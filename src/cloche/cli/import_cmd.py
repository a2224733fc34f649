"""``cloche import ROOTFS NAME[:TAG]``: a directory or a tar becomes a one-layer image, as
``docker import`` makes one (with ``--change`` for the config)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cloche.cli._common import parse_platform, root_option


@click.command("import")
@click.argument("source")
@click.argument("name", required=False)
@click.option("-c", "--change", "changes", multiple=True,
              help="Dockerfile instruction for the config: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, "
                   "ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR (repeatable).")
@click.option("-m", "--message", help="Comment of the image's history entry.")
@click.option("--platform", help="Platform of the image, os/arch[/variant] (default: this host).")
@root_option
def command(source: str, name: str | None, changes: tuple[str, ...], message: str | None,
            platform: str | None, root: Path | None) -> None:
    """Import a root filesystem (directory, tar, tar.gz/zst/xz/bz2, or - for stdin)."""
    from cloche import api

    plat = parse_platform(platform)
    image = api.import_image(sys.stdin.buffer if source == "-" else Path(source), name,
                             changes=changes, message=message, platform=plat, root=root)
    click.echo(str(image.config_digest))
