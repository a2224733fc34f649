"""``cloche explain``: what a build ships, what it leaked, whether it will run."""

from __future__ import annotations

from pathlib import Path

import click

from cloche.cli._common import parse_platform
from cloche.engine import options as opts

FAIL_EXIT = 3  # --fail-on matched a finding (1: an error, 2: a usage error)


@click.command("explain")
@click.argument("target", default=".")
@click.option("--image", "as_image", is_flag=True,
              help="TARGET is an image even if a folder of that name exists.")
@click.option("--format", "fmt", type=click.Choice(("text", "json", "html")), default="text",
              show_default=True, help="text for people, json (docs/explain.md), html (one page).")
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False),
              help="Write the report to this file instead of stdout.")
@click.option("--fail-on", "fail_on", multiple=True,
              type=click.Choice(("leak", "runtime", "waste", "any")),
              help=f"Exit {FAIL_EXIT} when a finding of this kind is made (repeatable).")
@click.option("-f", "--file", "dockerfile", help="Dockerfile path (default CONTEXT/Dockerfile).")
@click.option("-t", "--tag", "tags", multiple=True, help="Name the built image (repeatable).")
@click.option("--target", "stage", help="The stage to build (default: the last one).")
@click.option("--build-arg", "build_args", multiple=True, help="KEY=VALUE (repeatable).")
@click.option("--build-context", "build_contexts", multiple=True, metavar="NAME=VALUE",
              help="A named context, as for cloche build (repeatable).")
@click.option("--secret", "secrets", multiple=True,
              help="id=ID,src=PATH | id=ID,env=VAR (repeatable).")
@click.option("--platform", help="Target platform, e.g. linux/amd64.")
@click.option("--no-cache", is_flag=True, help="Do not use the build cache.")
@click.option("--pull", is_flag=True, help="Always pull base images, even when stored.")
@click.option("--network", default="default", show_default=True,
              type=click.Choice(("default", "none", "host")), help="Network of RUN steps.")
@click.option("--allow", "allow", multiple=True, metavar="ENTITLEMENT",
              help="network.host or security.insecure (repeatable).")
@click.option("--isolation", default="auto", show_default=True,
              type=click.Choice(("auto", "namespaces", "chroot")), help="As for cloche build.")
@click.option("--progress", default="plain", show_default=True,
              type=click.Choice(("auto", "plain", "tty", "quiet")),
              help="Build progress, on stderr.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path),
              help="Store directory (default: $CLOCHE_ROOT, /var/lib/cloche for root).")
def command(target: str, as_image: bool, fmt: str, output: str | None,
            fail_on: tuple[str, ...], dockerfile: str | None, tags: tuple[str, ...],
            stage: str | None, build_args: tuple[str, ...], build_contexts: tuple[str, ...],
            secrets: tuple[str, ...], platform: str | None, no_cache: bool, pull: bool,
            network: str, allow: tuple[str, ...], isolation: str, progress: str,
            root: Path | None) -> None:
    """Explain a build (CONTEXT, a folder) or an image (a stored name, docker://REF,
    oci-archive:PATH, docker-archive:PATH): each stage's weight, what ships from where,
    credentials and files that leak, and whether the final image will run."""
    from cloche import api

    parse_platform(platform)
    build_mode = not as_image and Path(target).is_dir()
    if build_mode:
        from cloche.cli._rootless import enter_user_namespace

        enter_user_namespace()  # as cloche build: before any thread starts
        from cloche.cli._progress import make_renderer

        renderer = make_renderer(progress)
        options = opts.BuildOptions(
            context=target, dockerfile=dockerfile, tags=tags, target=stage,
            build_args=opts.parse_key_values(build_args, "--build-arg", from_env=True),
            secrets=tuple(opts.parse_secret(s) for s in secrets), platform=platform,
            no_cache=no_cache, pull=pull, network=network, allow=allow, root=root,
            isolation=isolation, build_contexts=opts.parse_build_contexts(build_contexts))
        from contextlib import AbstractContextManager, nullcontext

        live = renderer if isinstance(renderer, AbstractContextManager) else nullcontext()
        with live:
            report = api.explain(options, listener=renderer)
    else:
        report = api.explain(target, root=root, platform=platform, image=True)
    if fmt == "json":
        import json

        text = json.dumps(report.to_json(), indent=2) + "\n"
    elif fmt == "html":
        from cloche.explainer.render_html import render_html

        text = render_html(report)
    else:
        from cloche.explainer.render_text import render_text

        text = render_text(report)
    if output:
        from cloche.fs.outfile import write_output_file

        write_output_file(output, text.encode(), what="the report", flag="--output")
    else:
        click.echo(text, nl=False)
    if fail_on and report.failed(list(fail_on)):
        raise SystemExit(FAIL_EXIT)
