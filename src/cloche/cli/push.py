"""``cloche push``: send a stored image to a registry, as ``docker push``."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import click

from cloche.cli._common import check_root, root_option
from cloche.cli.pull import PullRenderer, transfer_view
from cloche.events import BlobProgress, Event, LayerPushed
from cloche.oci.mediatypes import CONFIG_TYPES


class PushRenderer(PullRenderer):
    """Docker's push lines for the typed transfer events (called from upload threads), and
    each layer's bytes as ``cloche pull`` shows them (``Pushing 1.05MB / 3.40MB 0.4s``)."""

    WORDS_PUSHED = {"exists": "Layer already exists", "mounted": "Mounted",
                    "uploaded": "Pushed"}
    VERB = "Pushing"

    def __call__(self, event: Event) -> None:
        # manifests: the digest line at the end says it; the config is no layer (Docker
        # lists only layers)
        if not isinstance(event, (LayerPushed, BlobProgress)) \
                or event.descriptor.media_type in CONFIG_TYPES:
            return
        with self._lock:
            if isinstance(event, BlobProgress):
                self.progress(event)
            else:
                self.echo(f"{event.descriptor.digest.short}: "
                          f"{self.WORDS_PUSHED.get(event.how, event.how)}")


@click.command("push")
@click.argument("reference")
@click.argument("destination", required=False)
@click.option("-q", "--quiet", is_flag=True, help="Print only the pushed digest.")
@root_option
def command(reference: str, destination: str | None, quiet: bool, root: Path | None) -> None:
    """Push the stored image REFERENCE to its registry, or to DESTINATION when given
    (a registry reference such as 127.0.0.1:5000/app:1)."""
    from cloche import api
    from cloche.events import ignore
    from cloche.oci.reference import Reference

    target = Reference.parse(destination or reference)
    check_root(root)
    if not quiet:
        click.echo(f"The push refers to repository [{target.name}]", err=True)
    view = transfer_view(quiet)
    live: AbstractContextManager[object] = view if view is not None else nullcontext()
    with live:
        result = api.push(reference, target, root=root,
                          listener=ignore if quiet else PushRenderer(quiet, view))
    if quiet:
        click.echo(str(result.digest))
    else:
        click.echo(f"{target.tag or target.digest}: digest: {result.digest} size: {result.size}")
