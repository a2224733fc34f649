"""``cloche build``: the flags of ``docker buildx build``, a thin shell over cloche.api.build."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cloche.build import options as opts
from cloche.cli._progress import LiveRenderer, make_renderer


@click.command("build")
@click.argument("context", default=".")
@click.option("-f", "--file", "dockerfile", help="Dockerfile path ('-' reads it from stdin); "
              "default CONTEXT/Dockerfile.")
@click.option("-t", "--tag", "tags", multiple=True, help="Name and tag, NAME[:TAG] (repeatable).")
@click.option("--target", help="The stage to build (default: the last one).")
@click.option("--build-arg", "build_args", multiple=True, help="KEY=VALUE, or KEY to take it "
              "from the environment (repeatable).")
@click.option("--secret", "secrets", multiple=True,
              help="id=ID,src=PATH | id=ID,env=VAR | id=ID (repeatable).")
@click.option("--ssh", "ssh", multiple=True, help="default|ID=SOCKET agent socket to forward.")
@click.option("--platform", help="Target platform, e.g. linux/amd64.")
@click.option("--no-cache", is_flag=True, help="Do not use the build cache.")
@click.option("--no-cache-filter", "no_cache_filter", multiple=True,
              help="Do not use the cache for this stage (repeatable).")
@click.option("--pull", is_flag=True, help="Always pull base images, even when stored.")
@click.option("--network", default="default", show_default=True,
              type=click.Choice(opts.NETWORK_MODES), help="Network of RUN steps.")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE image label (repeatable).")
@click.option("--progress", default="auto", show_default=True,
              type=click.Choice(opts.PROGRESS_MODES), help="How progress is shown.")
@click.option("-o", "--output", "outputs", multiple=True,
              help="type=oci|docker|local|tar|image|registry,dest=...,name=...,push=true")
@click.option("--push", is_flag=True, help="Push the image (same as -o type=registry).")
@click.option("--iidfile", type=click.Path(dir_okay=False), help="Write the image ID here.")
@click.option("--metadata-file", type=click.Path(dir_okay=False),
              help="Write build metadata (JSON) here.")
@click.option("--jobs", "-j", default=0, type=int, help="Stages run at once (default: cores).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path),
              help="Store directory (default: $CLOCHE_ROOT, /var/lib/cloche for root).")
def command(context: str, dockerfile: str | None, tags: tuple[str, ...], target: str | None,
            build_args: tuple[str, ...], secrets: tuple[str, ...], ssh: tuple[str, ...],
            platform: str | None, no_cache: bool, no_cache_filter: tuple[str, ...],
            pull: bool, network: str,
            labels: tuple[str, ...], progress: str, outputs: tuple[str, ...], push: bool,
            iidfile: str | None, metadata_file: str | None, jobs: int,
            root: Path | None) -> None:
    """Build an image from a Dockerfile, as `docker build` does, without a daemon."""
    from cloche import api  # imported late: keeps `cloche --help` fast

    dockerfile_text = None
    if dockerfile == "-":
        if context == "-":
            raise click.UsageError("-f - and a context of - cannot both read stdin")
        dockerfile_text = sys.stdin.read()
    options = opts.BuildOptions(
        context=context, dockerfile=dockerfile, dockerfile_text=dockerfile_text, tags=tags,
        target=target, build_args=opts.parse_key_values(build_args, "--build-arg", from_env=True),
        secrets=tuple(opts.parse_secret(s) for s in secrets), ssh=ssh, platform=platform,
        no_cache=no_cache, no_cache_filter=tuple(n.lower() for n in no_cache_filter),
        pull=pull, network=network,
        labels=opts.parse_key_values(labels, "--label"),
        outputs=tuple(opts.parse_output(o) for o in outputs), push=push, iidfile=iidfile,
        metadata_file=metadata_file, jobs=jobs, root=root)
    renderer = make_renderer(progress)
    if isinstance(renderer, LiveRenderer):
        with renderer:
            result = api.build(options, listener=renderer)
    else:
        result = api.build(options, listener=renderer)
    if progress == "quiet":
        click.echo(str(result.digest))
