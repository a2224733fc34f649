"""``cloche tag SOURCE TARGET``: give a stored image another name, as ``docker tag``."""

from __future__ import annotations

from pathlib import Path

import click

from cloche.cli._common import open_store, root_option


@click.command("tag")
@click.argument("source")
@click.argument("target")
@root_option
def command(source: str, target: str, root: Path | None) -> None:
    """Create a tag TARGET that refers to the image SOURCE (name, digest or ID)."""
    store = open_store(root, create=False)
    store.tag(target, store.resolve(source))
