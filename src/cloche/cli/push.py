"""``cloche push``: send a stored image to a registry, as ``docker push``."""

from __future__ import annotations

import threading
from pathlib import Path

import click

from cloche.cli._common import check_root, root_option
from cloche.events import Event, LayerPushed
from cloche.oci.mediatypes import CONFIG_TYPES


class PushRenderer:
    """Docker's push lines for the typed transfer events (called from upload threads)."""

    WORDS = {"exists": "Layer already exists", "mounted": "Mounted", "uploaded": "Pushed"}

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        # manifests: the digest line at the end says it; the config is no layer (Docker
        # lists only layers)
        if isinstance(event, LayerPushed) and event.descriptor.media_type not in CONFIG_TYPES:
            with self._lock:
                click.echo(f"{event.descriptor.digest.short}: "
                           f"{self.WORDS.get(event.how, event.how)}", err=True)


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
    result = api.push(reference, target, root=root,
                      listener=ignore if quiet else PushRenderer())
    if quiet:
        click.echo(str(result.digest))
    else:
        click.echo(f"{target.tag or target.digest}: digest: {result.digest} size: {result.size}")
