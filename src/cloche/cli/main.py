"""Entry point of the ``cloche`` command: discovers subcommands and renders errors."""

from __future__ import annotations

import importlib
import os
import pkgutil
import signal
import sys
from typing import Any

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
        # Import only the module of the command asked for (`cloche build` should not pay for
        # the registry client's imports); the full scan is for --help and unknown names.
        if not getattr(self, "_loaded", False) and name.isidentifier() \
                and not name.startswith("_") and name not in _SKIP:
            for module_name in (name, f"{name}_cmd"):
                try:
                    module = importlib.import_module(f"cloche.cli.{module_name}")
                except ModuleNotFoundError as err:
                    if err.name != f"cloche.cli.{module_name}":
                        raise
                    continue
                cmd = getattr(module, "command", None)
                if isinstance(cmd, click.Command) and cmd.name == name:
                    return cmd
        self._load()
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClocheError as err:
            click.echo(err.render(), err=True)
            sys.exit(err.exit_code)
        except (click.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise  # click prints these itself (usage errors, --help, a declined prompt)
        except KeyboardInterrupt:
            _interrupted()
        except OSError as err:
            # a file or device the library did not expect to fail: still one located line
            if isinstance(err, BrokenPipeError):
                _broken_pipe()
            where = f" {err.filename}:" if err.filename else ""
            click.echo(f"error:{where} {err.strerror or err}", err=True)
            sys.exit(1)
        except Exception as err:
            if os.environ.get("CLOCHE_DEBUG"):
                raise
            click.echo(f"error: internal error: {type(err).__name__}: {err}\n"
                       "hint: this is a bug in cloche; run again with CLOCHE_DEBUG=1 for the "
                       "traceback and report it", err=True)
            sys.exit(70)


def _interrupted() -> None:
    click.echo("interrupted", err=True)
    sys.exit(130)


def _broken_pipe() -> None:
    """The reader of our output went away (``cloche images | head -1``): stop quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
    os._exit(141)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(cloche.__version__, prog_name="cloche")
def cli() -> None:
    """cloche builds container images from Dockerfiles, without a daemon."""


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    """SIGTERM and SIGHUP (a CI runner cancelling the job, a closed terminal) stop cloche as
    Ctrl-C does: the build's steps are killed, its scratch removed, ``interrupted``, 130.
    Left to their default, they ended the process at once and left its files behind."""
    raise KeyboardInterrupt


def main() -> None:
    if signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, signal.SIG_DFL):
        signal.signal(signal.SIGINT, signal.default_int_handler)  # see cloche/cli/__init__.py
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
            signal.signal(sig, _stop_like_ctrl_c)
    try:
        cli(prog_name="cloche")
    except KeyboardInterrupt:  # while click parses the arguments, outside invoke()
        _interrupted()
    except BrokenPipeError:
        _broken_pipe()


if __name__ == "__main__":
    main()
