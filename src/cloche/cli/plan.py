"""``cloche plan``: show the stage graph of a Dockerfile without building anything."""

from __future__ import annotations

from pathlib import Path

import click

from cloche.cli._common import parse_platform, read_stdin_dockerfile
from cloche.dockerfile.stages import parse_dockerfile
from cloche.errors import ConfigError
from cloche.plan.graph import build_plan
from cloche.plan.render import RENDERERS


def _build_args(values: tuple[str, ...]) -> dict[str, str]:
    """``K=V`` pairs; a bare ``K`` takes the value of the environment variable K, as Docker."""
    import os

    args: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not name:
            raise ConfigError(f"--build-arg {item!r}: expected NAME=VALUE")
        if sep:
            args[name] = value
        elif name in os.environ:
            args[name] = os.environ[name]
    return args


@click.command("plan")
@click.option("-f", "--file", "file", default=None, metavar="FILE",
              help="The Dockerfile (default: CONTEXT/Dockerfile; '-' reads stdin).")
@click.option("--target", default=None, metavar="STAGE", help="Plan up to this stage.")
@click.option("--build-arg", "build_args", multiple=True, metavar="K=V",
              help="Set a build-time variable (repeatable).")
@click.option("--platform", default=None, metavar="OS/ARCH", help="The target platform.")
@click.option("--format", "fmt", type=click.Choice(sorted(RENDERERS)), default="text",
              show_default=True, help="Output format.")
@click.argument("context", default=".", type=click.Path(file_okay=False, path_type=Path))
def command(file: str | None, target: str | None, build_args: tuple[str, ...],
            platform: str | None, fmt: str, context: Path) -> None:
    """Show the stages a build would run: bases, copies, skipped stages, parallel levels."""
    if platform is not None:
        platform = platform if parse_platform(platform) is not None else None
    if file == "-":
        text, name = read_stdin_dockerfile(), "Dockerfile"
    else:
        path = Path(file) if file else context / "Dockerfile"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read the Dockerfile {str(path)!r}: {err.strerror}",
                              hint="pass -f FILE or a CONTEXT directory that has one") from None
        except UnicodeDecodeError:
            raise ConfigError(f"the Dockerfile {str(path)!r} is not UTF-8 text") from None
        name = str(path)
    dockerfile = parse_dockerfile(text, file=name)
    plan = build_plan(dockerfile, target=target, build_args=_build_args(build_args),
                      platform=platform)
    click.echo(RENDERERS[fmt](plan))
