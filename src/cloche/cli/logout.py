"""``cloche logout``: forget the saved credentials of a registry, as ``docker logout``."""

from __future__ import annotations

import click


@click.command("logout")
@click.argument("server", required=False)
def command(server: str | None) -> None:
    """Log out from a registry (default docker.io)."""
    from cloche.registry.login import logout, normalize_server

    registry = normalize_server(server)
    if logout(registry):
        click.echo(f"Removing login credentials for {registry}")
    else:
        click.echo(f"Not logged in to {registry}")
