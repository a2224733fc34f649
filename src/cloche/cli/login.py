"""``cloche login``: check credentials against a registry and save them as ``docker login`` does."""

from __future__ import annotations

import sys

import click


@click.command("login")
@click.argument("server", required=False)
@click.option("-u", "--username", help="User name.")
@click.option("-p", "--password", help="Password (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def command(server: str | None, username: str | None, password: str | None,
            password_stdin: bool) -> None:
    """Log in to a registry (default docker.io); the login is shared with docker."""
    from cloche.errors import ConfigError
    from cloche.registry.login import login, normalize_server

    if password_stdin:
        if password:
            raise ConfigError("--password and --password-stdin are mutually exclusive")
        if not username:
            raise ConfigError("--password-stdin needs --username")
        password = sys.stdin.read().rstrip("\r\n")
    registry = normalize_server(server)
    if not username:
        username = click.prompt("Username")
    if not password:
        password = click.prompt("Password", hide_input=True)
    if not password:
        raise ConfigError("a password is required")
    path = login(registry, username or "", password)
    click.echo(f"Login Succeeded (credentials saved in {path})")
