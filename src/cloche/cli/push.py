"""``cloche push``: send a stored image to a registry, as ``docker push``."""

from __future__ import annotations

import threading
from pathlib import Path

import click

from cloche.cli._common import open_store, root_option


@click.command("push")
@click.argument("reference")
@click.argument("destination", required=False)
@click.option("-q", "--quiet", is_flag=True, help="Print only the pushed digest.")
@root_option
def command(reference: str, destination: str | None, quiet: bool, root: Path | None) -> None:
    """Push the stored image REFERENCE to its registry, or to DESTINATION when given
    (a registry reference such as 127.0.0.1:5000/app:1)."""
    from cloche.registry.push import push_stored
    from cloche.registry.reference import Reference

    target = Reference.parse(destination or reference)
    lock = threading.Lock()
    words = {"exists": "Layer already exists", "mounted": "Mounted", "uploaded": "Pushed"}

    def progress(event: str, desc: object) -> None:
        if quiet or event == "manifest":
            return
        with lock:
            click.echo(f"{desc.digest.short}: {words.get(event, event)}", err=True)  # type: ignore[attr-defined]

    if not quiet:
        click.echo(f"The push refers to repository [{target.name}]", err=True)
    result = push_stored(open_store(root, create=False), reference, target, progress=progress)
    if quiet:
        click.echo(str(result.digest))
    else:
        click.echo(f"{target.tag or target.digest}: digest: {result.digest} size: {result.size}")
