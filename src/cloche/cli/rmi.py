"""``cloche rmi IMAGE...``: remove names, and images left without any, as ``docker rmi``.

A name is untagged; an image is deleted from the index when its last name goes. An ID or a
digest removes the image itself, which needs ``--force`` when several names share it. Blobs
no image uses any more are then collected, except those written in the last hour (another
cloche process may be about to name them); when another process holds a lease on the store,
collection is left for later rather than waited for.
"""

from __future__ import annotations

from pathlib import Path

import click

from cloche.cli._common import open_store, root_option
from cloche.errors import ImageNotFoundError, StoreError
from cloche.store.lock import LockBusyError


class ImageInUseError(StoreError):
    """An image ID given to rmi while several names refer to it."""


@click.command("rmi")
@click.argument("images", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Remove an image by ID even when several "
              "names refer to it.")
@root_option
def command(images: tuple[str, ...], force: bool, root: Path | None) -> None:
    """Remove one or more images from the local store."""
    from cloche.store.store import parse_name

    store = open_store(root, create=False)
    missing: list[ImageNotFoundError] = []
    for text in images:
        try:
            entry = store.lookup(text)
        except ImageNotFoundError as err:
            missing.append(err)  # as docker rmi: the other images are still removed
            continue
        names_before = [n for n, d in store.names() if d.digest == entry.descriptor.digest]
        if entry.name is not None and _is_name(text, entry.name):
            store.untag(entry.name)
            click.echo(f"Untagged: {parse_name(entry.name).familiar}")
            if len(names_before) > 1:
                continue
            if entry.descriptor.digest in {s.descriptor.digest for s in store.list_images()}:
                continue  # still present as another entry (dangling copy)
        else:
            if len(names_before) > 1 and not force:
                raise ImageInUseError(
                    f"unable to delete {text} (must be forced): image is referenced in "
                    f"multiple repositories ({', '.join(parse_name(n).familiar for n in names_before)})",
                    hint="pass --force, or remove the names one by one")
            for name in store.remove(entry.descriptor.digest):
                click.echo(f"Untagged: {parse_name(name).familiar}")
        click.echo(f"Deleted: {entry.image_id}")
    try:
        store.gc(wait=False)
    except LockBusyError:
        pass  # another cloche holds a lease (a build, a pull): a later rmi or gc frees the space
    if len(missing) == 1:
        raise missing[0]
    if missing:
        raise ImageNotFoundError("no such images: " + ", ".join(
            m.message.removeprefix("no such image: ") for m in missing), hint=missing[0].hint)


def _is_name(text: str, name: str) -> bool:
    from cloche.errors import InvalidReferenceError
    from cloche.store.store import parse_name

    try:
        return str(parse_name(text)) == name
    except InvalidReferenceError:
        return False
