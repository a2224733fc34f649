"""``cloche pull``: fetch an image from a registry into the store, as ``docker pull``."""

from __future__ import annotations

import threading
from pathlib import Path

import click

from cloche.cli._common import open_store, parse_platform, root_option


@click.command("pull")
@click.argument("reference")
@click.option("--platform", help="os/arch[/variant] to pick from a multi-platform image "
                                 "(default: this machine's).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image name.")
@root_option
def command(reference: str, platform: str | None, quiet: bool, root: Path | None) -> None:
    """Pull an image (NAME[:TAG] or NAME@DIGEST) from its registry or a configured mirror."""
    from cloche.registry.pull import pull_image
    from cloche.registry.reference import Reference

    ref = Reference.parse(reference)
    plat = parse_platform(platform)
    lock = threading.Lock()

    fetched: list[str] = []

    def progress(event: str, desc: object) -> None:
        if event == "start":
            fetched.append(event)
        if quiet:
            return
        short = desc.digest.short  # type: ignore[attr-defined]
        text = {"exists": "Already exists", "start": "Pulling fs layer",
                "done": "Pull complete"}.get(event, event)
        with lock:
            click.echo(f"{short}: {text}", err=True)

    if not quiet:
        click.echo(f"{ref.tag or ref.digest}: Pulling from {ref.familiar_name}", err=True)
    image = pull_image(ref, open_store(root), plat, progress=progress)
    if not quiet:
        click.echo(f"Digest: {image.digest}", err=True)
        status = "Downloaded newer image for" if fetched else "Image is up to date for"
        click.echo(f"Status: {status} {ref.familiar}", err=True)
    click.echo(str(ref))
