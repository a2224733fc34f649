"""``cloche pull``: fetch an image from a registry into the store, as ``docker pull``."""

from __future__ import annotations

import threading
from pathlib import Path

import click

from cloche.cli._common import parse_platform, root_option
from cloche.events import Event, LayerExists, LayerPulled, LayerPulling
from cloche.oci.mediatypes import CONFIG_TYPES


class PullRenderer:
    """Docker's pull lines for the typed transfer events (called from download threads)."""

    WORDS = {LayerExists: "Already exists", LayerPulling: "Pulling fs layer",
             LayerPulled: "Pull complete"}

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.downloaded = 0
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if not isinstance(event, (LayerExists, LayerPulling, LayerPulled)) \
                or event.descriptor.media_type in CONFIG_TYPES:  # Docker lists layers only
            return
        with self._lock:
            if isinstance(event, LayerPulled):
                self.downloaded += 1
            if not self.quiet:
                click.echo(f"{event.descriptor.digest.short}: {self.WORDS[type(event)]}",
                           err=True)


@click.command("pull")
@click.argument("reference")
@click.option("--platform", help="os/arch[/variant] to pick from a multi-platform image "
                                 "(default: this machine's).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image name.")
@root_option
def command(reference: str, platform: str | None, quiet: bool, root: Path | None) -> None:
    """Pull an image (NAME[:TAG] or NAME@DIGEST) from its registry or a configured mirror."""
    from cloche import api
    from cloche.oci.reference import Reference

    ref = Reference.parse(reference)
    plat = parse_platform(platform)
    renderer = PullRenderer(quiet)
    if not quiet:
        click.echo(f"{ref.tag or ref.digest}: Pulling from {ref.familiar_name}", err=True)
    image = api.pull(ref, platform=plat, root=root, listener=renderer)
    if not quiet:
        click.echo(f"Digest: {image.digest}", err=True)
        status = "Downloaded newer image for" if renderer.downloaded else "Image is up to date for"
        click.echo(f"Status: {status} {ref.familiar}", err=True)
    click.echo(str(ref))
