"""Entry point of the ``cloche`` command: discovers subcommands and renders errors."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click

import cloche
from cloche.errors import ClocheError

_SKIP = {"main", "output"}


class _Group(click.Group):
    """A group whose subcommands are the ``command`` objects of this package's modules."""

    def _load(self) -> None:
        if getattr(self, "_loaded", False):
            return
        self._loaded = True
        package = importlib.import_module("cloche.cli")
        for info in pkgutil.iter_modules(package.__path__):
            if info.name in _SKIP or info.name.startswith("_"):
                continue
            module = importlib.import_module(f"cloche.cli.{info.name}")
            cmd = getattr(module, "command", None)
            if isinstance(cmd, click.Command):
                self.add_command(cmd)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        self._load()
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):  # noqa: ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except ClocheError as err:
            click.echo(err.render(), err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(cloche.__version__, prog_name="cloche")
def cli() -> None:
    """cloche builds container images from Dockerfiles, without a daemon."""


def main() -> None:
    cli(prog_name="cloche")


if __name__ == "__main__":
    main()
