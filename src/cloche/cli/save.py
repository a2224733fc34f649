"""``cloche save IMAGE... -o FILE``: images from the store to an OCI archive or, with
``--format docker``, to the docker-archive that ``docker load`` reads."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cloche.cli._common import check_root, parse_platform, root_option
from cloche.fs.outfile import OutputFileError


@click.command("save")
@click.argument("images", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Archive file to write (default: standard output, when it is not a terminal).")
@click.option("--format", "fmt", type=click.Choice(["oci", "docker"]), default="oci",
              show_default=True, help="oci (an OCI layout in a tar) or docker (docker-archive).")
@click.option("--platform", help="For an image stored as an index, the platform to save.")
@root_option
def command(images: tuple[str, ...], output: Path | None, fmt: str, platform: str | None,
            root: Path | None) -> None:
    """Save one or more images to a tar archive."""
    from cloche import api

    plat = parse_platform(platform)
    check_root(root)
    if output is None and sys.stdout.isatty():
        raise click.UsageError("refusing to write an archive to a terminal; use -o FILE")
    try:
        api.save(images, output if output is not None else sys.stdout.buffer, format=fmt,
                 platform=plat, root=root)
    except OutputFileError as err:  # the library names the file; the flag is ours
        raise err.with_flag("-o") from err
