"""``cloche pull``: fetch an image from a registry into the store, as ``docker pull``."""

from __future__ import annotations

import sys
import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cloche.cli._common import parse_platform, root_option
from cloche.events import BlobProgress, Event, LayerExists, LayerPulled, LayerPulling
from cloche.oci.mediatypes import CONFIG_TYPES

if TYPE_CHECKING:
    from cloche.cli._live import TransferView


def transfer_view(quiet: bool) -> TransferView | None:
    """The live bars of ``cloche pull``/``push`` when stderr is a terminal, else None (plain
    lines)."""
    if quiet or not sys.stderr.isatty():
        return None
    from cloche.cli._live import TransferView  # rich: imported only for a terminal

    return TransferView()


class PullRenderer:
    """Docker's pull lines for the typed transfer events (called from download threads), and
    each layer's bytes: BuildKit's transfer line (``Downloading 1.05MB / 3.40MB 0.4s``, at most
    one a second, then ``... done``), or a bar on a terminal (``view``)."""

    WORDS = {LayerExists: "Already exists", LayerPulling: "Pulling fs layer",
             LayerPulled: "Pull complete"}
    VERB = "Downloading"

    def __init__(self, quiet: bool, view: TransferView | None = None) -> None:
        from cloche.cli._progress import TransferLines

        self.quiet = quiet
        self.view = view
        self.downloaded = 0
        self._lock = threading.Lock()
        self._lines = TransferLines()

    def echo(self, text: str) -> None:
        if self.view is not None:
            self.view.print(text)
        else:
            click.echo(text, err=True)

    def progress(self, event: BlobProgress) -> None:
        """A layer's bytes: a bar, or a plain line (the lock held)."""
        if self.view is not None:
            self.view(event)
            return
        text = self._lines.text(event)
        if text is not None:
            self.echo(f"{event.descriptor.digest.short}: {self.VERB} {text}")

    def __call__(self, event: Event) -> None:
        if not isinstance(event, (LayerExists, LayerPulling, LayerPulled, BlobProgress)) \
                or event.descriptor.media_type in CONFIG_TYPES:  # Docker lists layers only
            return
        with self._lock:
            if isinstance(event, BlobProgress):
                if not self.quiet:
                    self.progress(event)
                return
            if isinstance(event, LayerPulled):
                self.downloaded += 1
            if not self.quiet:
                self.echo(f"{event.descriptor.digest.short}: {self.WORDS[type(event)]}")


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
    view = transfer_view(quiet)
    renderer = PullRenderer(quiet, view)
    if not quiet:
        click.echo(f"{ref.tag or ref.digest}: Pulling from {ref.familiar_name}", err=True)
    live: AbstractContextManager[object] = view if view is not None else nullcontext()
    with live:
        image = api.pull(ref, platform=plat, root=root, listener=renderer)
    if not quiet:
        click.echo(f"Digest: {image.digest}", err=True)
        status = "Downloaded newer image for" if renderer.downloaded else "Image is up to date for"
        click.echo(f"Status: {status} {ref.familiar}", err=True)
    click.echo(str(ref))
