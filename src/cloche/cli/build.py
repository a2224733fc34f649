"""``cloche build``: the flags of ``docker buildx build``, a thin shell over cloche.api.build."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cloche.cli._common import parse_platform, read_stdin_dockerfile
from cloche.engine import options as opts
from cloche.errors import ClocheError, ConfigError

if TYPE_CHECKING:
    from cloche.cli._fastpath import FastPath
    from cloche.engine import Prefetch

MAX_SECRET_SIZE = 500 * 1024  # BuildKit's limit for a secret file


@click.command("build")
@click.argument("context", default=".")
@click.option("-f", "--file", "dockerfile", help="Dockerfile path ('-' reads it from stdin); "
              "default CONTEXT/Dockerfile.")
@click.option("-t", "--tag", "tags", multiple=True, help="Name and tag, NAME[:TAG] (repeatable).")
@click.option("--target", help="The stage to build (default: the last one).")
@click.option("-q", "--quiet", is_flag=True,
              help="Print only the image ID when done (same as --progress=quiet).")
@click.option("--build-context", "build_contexts", multiple=True, metavar="NAME=VALUE",
              help="A named context for FROM, COPY --from and RUN --mount from=: a directory, "
                   "docker-image://REF or oci-layout://PATH[:TAG][@DIGEST] (repeatable).")
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
              type=click.Choice(opts.NETWORK_MODES), help="Network of RUN steps "
              "(default: a namespace of their own; host needs --allow network.host).")
@click.option("--allow", "allow", multiple=True, metavar="ENTITLEMENT",
              help="Grant RUN steps network.host or security.insecure (repeatable).")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE image label (repeatable).")
@click.option("--progress", envvar="BUILDKIT_PROGRESS", default="auto", show_default=True,
              type=click.Choice(opts.PROGRESS_MODES),
              help="How progress is shown (default: $BUILDKIT_PROGRESS, else auto).")
@click.option("-o", "--output", "outputs", multiple=True,
              help="type=oci|docker|local|tar|image|registry,dest=...,name=...,push=true")
@click.option("--push", is_flag=True, help="Push the image (same as -o type=registry).")
@click.option("--load", is_flag=True, help="Load the image into the local Docker engine "
              "(same as -o type=docker), through its API socket ($DOCKER_HOST or "
              "/var/run/docker.sock).")
@click.option("--cache-to", "cache_to", multiple=True, metavar="SPEC",
              help="Export the build cache: type=registry,ref=REF[,mode=min|max], "
                   "type=local,dest=DIR or type=inline (docs/cache.md; repeatable).")
@click.option("--cache-from", "cache_from", multiple=True, metavar="SPEC",
              help="Import a build cache: type=registry,ref=REF, type=local,src=DIR, or an "
                   "image with an inline cache (repeatable).")
@click.option("--iidfile", type=click.Path(dir_okay=False), help="Write the image ID here.")
@click.option("--metadata-file", type=click.Path(dir_okay=False),
              help="Write build metadata (JSON) here.")
@click.option("--jobs", "-j", default=0, type=click.IntRange(min=0),
              help="Stages run at once (default: cores).")
@click.option("--pids-limit", "pids_limit", type=click.IntRange(min=-1), default=None,
              help="Processes each RUN step may have (default 4096; -1: unlimited).")
@click.option("--memory", "-m", "memory", metavar="SIZE",
              help="Memory each RUN step may use, e.g. 2g (default: unlimited).")
@click.option("--ulimit", "ulimits", multiple=True, metavar="NAME=SOFT[:HARD]",
              help="A resource limit of RUN steps, e.g. nofile=1024:2048 (repeatable).")
@click.option("--annotation", "annotations", multiple=True, metavar="[TYPE:]KEY=VALUE",
              help="An annotation of the image's manifest (TYPE manifest, the default) or of "
                   "its index entry in an archive (manifest-descriptor) (repeatable).")
@click.option("--add-host", "add_hosts", multiple=True, metavar="NAME:IP",
              help="A line of RUN steps' /etc/hosts, e.g. db:10.0.0.5 (repeatable).")
@click.option("--shm-size", "shm_size", metavar="SIZE",
              help="Size of /dev/shm in RUN steps (default 64m).")
@click.option("--isolation", default="auto", show_default=True,
              type=click.Choice(("auto", "namespaces", "chroot")),
              help="How RUN steps are isolated; chroot: no namespaces or mounts, for an "
                   "unprivileged container (docs/isolation.md).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path),
              help="Store directory (default: $CLOCHE_ROOT, /var/lib/cloche for root).")
@click.option("--check", "check_only", is_flag=True,
              help="Run the build checks only (same as --call=check); exit 1 on a warning.")
@click.option("--call", "call", default="build", metavar="NAME[,format=json]",
              help="What to do: build (default), check (the build checks only), outline (the "
                   "build args, secrets and SSH the target takes) or targets (the stages).")
@click.option("--explain", "explain", is_flag=True,
              help="After the build, print what ships from where, leaks and whether it will "
                   "run (cloche explain's summary; docs/explain.md).")
def command(context: str, dockerfile: str | None, tags: tuple[str, ...], target: str | None,
            build_args: tuple[str, ...], secrets: tuple[str, ...], ssh: tuple[str, ...],
            platform: str | None, no_cache: bool, no_cache_filter: tuple[str, ...],
            pull: bool, network: str, allow: tuple[str, ...],
            labels: tuple[str, ...], progress: str, outputs: tuple[str, ...], push: bool,
            iidfile: str | None, metadata_file: str | None, jobs: int,
            root: Path | None, pids_limit: int | None = None, memory: str | None = None,
            ulimits: tuple[str, ...] = (), shm_size: str | None = None,
            isolation: str = "auto", check_only: bool = False, call: str = "build",
            build_contexts: tuple[str, ...] = (), quiet: bool = False,
            explain: bool = False, load: bool = False, cache_to: tuple[str, ...] = (),
            cache_from: tuple[str, ...] = (), add_hosts: tuple[str, ...] = (),
            annotations: tuple[str, ...] = ()) -> None:
    """Build an image from a Dockerfile, as `docker build` does, without a daemon."""
    if quiet:
        progress = "quiet"
    from cloche.cli._call import parse_call

    call, call_format = parse_call(call)
    if check_only or call == "check":
        _run_checks(context, dockerfile, target, build_args, platform, root)
        return
    if call in ("outline", "targets"):
        _run_subrequest(call, call_format, context, dockerfile, target, build_args, platform)
        return
    from cloche.cli._rootless import enter_user_namespace
    from cloche.engine import prefetch_context

    try:
        if isolation != "chroot":  # chroot needs no namespace: as a user it records owners
            enter_user_namespace()  # not root: root of a user namespace, before any thread
    except ClocheError as err:
        from cloche.rootless.userns import userns_allowed

        if isolation == "auto" and not userns_allowed():
            isolation = "chroot"  # the kernel refuses user namespaces: chroot as this user
        else:
            err.hint = ((f"{err.hint}; " if err.hint else "") + "or build with "
                        "--isolation=chroot, which needs no namespace (docs/isolation.md)")
            raise

    # List the context on a thread now: find's stat calls overlap the imports below.
    prefetch = prefetch_context(context)

    parse_platform(platform)  # an unknown os or architecture fails before any work
    secret_specs = tuple(opts.parse_secret(s) for s in secrets)
    for text, spec in zip(secrets, secret_specs):
        _check_secret(text, spec)
    for item in ssh:
        _check_ssh(item)
    output_specs = tuple(opts.parse_output(o) for o in outputs)
    if load:  # buildx's --load: -o type=docker, into the local engine
        output_specs += (opts.OutputSpec(type="docker"),)
    # the checks engine/outputs.py makes at export, made before the build rather than after it
    if push and not tags:
        raise ConfigError("--push needs a name: add -t NAME:TAG")
    for output in output_specs:
        if output.type == "image" and not (output.names or tags):
            raise ConfigError("--output type=image needs name= (or -t)")
    dockerfile_text = None
    if dockerfile == "-":
        if context == "-":
            raise click.UsageError("-f - and a context of - cannot both read stdin")
        dockerfile_text = read_stdin_dockerfile()
    options = opts.BuildOptions(
        context=context, dockerfile=dockerfile, dockerfile_text=dockerfile_text, tags=tags,
        target=target, build_args=_with_epoch_env(
            opts.parse_key_values(build_args, "--build-arg", from_env=True)),
        secrets=secret_specs, ssh=ssh, platform=platform,
        no_cache=no_cache, no_cache_filter=tuple(n.lower() for n in no_cache_filter),
        pull=pull, network=network, allow=allow,
        labels=opts.parse_key_values(labels, "--label"),
        outputs=output_specs, push=push, iidfile=iidfile,
        metadata_file=metadata_file, jobs=jobs, root=root,
        pids_limit=pids_limit, ulimits=tuple(opts.parse_ulimit(u) for u in ulimits),
        memory=opts.parse_ram_size(memory, "--memory") if memory is not None else None,
        shm_size=opts.parse_ram_size(shm_size, "--shm-size") if shm_size is not None else None,
        add_hosts=tuple(opts.parse_add_host(h) for h in add_hosts),
        annotations=tuple(opts.parse_annotation(a) for a in annotations),
        isolation=isolation, build_contexts=opts.parse_build_contexts(build_contexts),
        cache_to=cache_to, cache_from=cache_from)  # type: ignore[arg-type]  # parsed there
    # --explain needs the events; rawjson's lines come from them (the fast path keeps plain's)
    fast = None if explain or progress == "rawjson" else _fastpath(options, prefetch)
    if fast is not None and fast.replay(progress, iidfile):
        return
    from cloche import api  # imported late: keeps `cloche --help` and a no-op rebuild fast
    from cloche.cli._progress import make_renderer, noop_lines
    from cloche.engine import events as ev

    renderer = make_renderer(progress)
    seen: list[ev.Event] = []

    def listener(event: ev.Event) -> None:
        seen.append(event)
        renderer(event)

    live = renderer if isinstance(renderer, AbstractContextManager) else nullcontext()
    with live:  # the tty view draws while the build runs
        result = api.build(options, listener=listener, prefetch=prefetch)
    if progress not in ("quiet", "rawjson"):  # rawjson sent them in its stream (as buildx)
        from cloche.cli._checks import print_build_warnings

        print_build_warnings(seen, plain=progress == "plain")
    if progress == "quiet":  # docker build -q: the image ID (config digest)
        click.echo(str(result.image_id))
    if explain:
        from cloche.explainer.render_text import render_summary

        click.echo(render_summary(api.explain_result(result, seen, root=root)), nl=False)
    if fast is not None and prefetch is not None:
        from cloche.cli._fastpath import racy
        from cloche.cli._units import step_size

        listing = fast.listing  # the build has taken it from prefetch meanwhile
        fast.record(digest=str(result.digest), image_id=str(result.image_id),
                    size=step_size(result.image.size),
                    names=f" as {', '.join(result.names)}" if result.names else "",
                    lines=noop_lines(seen),
                    racy=racy((s for _, s in listing.entries), prefetch.started))


def _with_epoch_env(build_args: dict[str, str]) -> dict[str, str]:
    """The SOURCE_DATE_EPOCH environment variable as the build arg of that name, unless
    ``--build-arg`` gives it, as buildx passes it (docs/reproducible.md)."""
    if "SOURCE_DATE_EPOCH" in os.environ and "SOURCE_DATE_EPOCH" not in build_args:
        build_args["SOURCE_DATE_EPOCH"] = os.environ["SOURCE_DATE_EPOCH"]
    return build_args


def _run_checks(context: str, dockerfile: str | None, target: str | None,
                build_args: tuple[str, ...], platform: str | None, root: Path | None) -> None:
    """``--check``: BuildKit's checks only, printed as buildx prints them; exit 1 on any."""
    from cloche import api
    from cloche.cli._checks import print_check_report

    dockerfile_text = None
    if dockerfile == "-":
        dockerfile_text = read_stdin_dockerfile()
    options = opts.BuildOptions(
        context=context, dockerfile=dockerfile, dockerfile_text=dockerfile_text, target=target,
        build_args=opts.parse_key_values(build_args, "--build-arg", from_env=True),
        platform=platform, root=root)
    report = api.check(options)
    if print_check_report(report):
        raise SystemExit(1)


def _run_subrequest(call: str, fmt: str, context: str, dockerfile: str | None,
                    target: str | None, build_args: tuple[str, ...],
                    platform: str | None) -> None:
    """``--call outline|targets``: BuildKit's subrequests, printed as buildx prints them."""
    from cloche import api
    from cloche.cli._call import echo

    dockerfile_text = read_stdin_dockerfile() if dockerfile == "-" else None
    options = opts.BuildOptions(
        context=context, dockerfile=dockerfile, dockerfile_text=dockerfile_text, target=target,
        build_args=opts.parse_key_values(build_args, "--build-arg", from_env=True),
        platform=platform)
    echo(call, api.subrequest(options, call), fmt)


def _fastpath(options: opts.BuildOptions, prefetch: Prefetch | None) -> FastPath | None:
    """The no-op fast path for a plain build into the store (cli/_fastpath.py), else None."""
    if (prefetch is None or options.no_cache or options.pull or options.outputs
            or options.push or options.metadata_file or options.no_cache_filter
            or options.build_contexts  # named contexts are not in the fingerprint
            or options.cache_to or options.cache_from):  # remote caches: the engine's
        return None
    from cloche.cli._fastpath import FastPath, Inputs, regular_bytes, remote_sources
    from cloche.store.root import default_root

    listing = prefetch.peek()
    if listing is None:
        return None
    context = prefetch.root
    dockerfile = None
    if options.dockerfile_text is None:
        dockerfile = (Path(options.dockerfile).resolve() if options.dockerfile
                      else context / "Dockerfile")
        read = regular_bytes(dockerfile)
        if read is None:
            return None  # a link, a FIFO, too big, missing: the build says what is wrong
        text = read
    else:
        text = options.dockerfile_text.encode()
    if remote_sources(text):
        return None
    store = Path(options.root).resolve() if options.root else default_root().resolve()
    return FastPath(Inputs(repr(options), context, dockerfile, listing.digest, store), listing)


def _check_secret(text: str, spec: opts.SecretSpec) -> None:
    """As buildx does before the build starts: a secret file must exist (and be at most
    500KB); ``id=ID`` alone needs the variable ID set (buildx would then read a file ID)."""
    if spec.src is not None:
        path = os.path.expanduser(spec.src)
        try:
            info = os.stat(path)
        except OSError as err:
            raise ConfigError(f"--secret {text!r}: cannot read {spec.src}: {err.strerror}",
                              hint="src= names a file on this machine") from None
        if not os.path.isfile(path):
            raise ConfigError(f"--secret {text!r}: {spec.src} is not a file")
        if info.st_size > MAX_SECRET_SIZE:
            raise ConfigError(f"--secret {text!r}: {spec.src} is too big "
                              f"({info.st_size} bytes; a secret holds at most 500KB)")
        return
    keys = {part.partition("=")[0].strip().lower() for part in text.split(",")}
    if "env" not in keys and spec.env is not None and spec.env not in os.environ:
        raise ConfigError(f"--secret {text!r}: no environment variable {spec.env} is set",
                          hint=f"set {spec.env}, or pass id={spec.id},src=PATH or "
                               f"id={spec.id},env=VAR")


def _check_ssh(item: str) -> None:
    """``--ssh default`` needs $SSH_AUTH_SOCK; ``--ssh ID=PATH`` needs PATH (buildx checks
    both before the build starts)."""
    name, _, path = item.partition("=")
    if not name:
        raise ConfigError(f"--ssh {item!r}: want default, ID or ID=SOCKET")
    path = path or os.environ.get("SSH_AUTH_SOCK", "")
    if not path:
        raise ConfigError(f"--ssh {item!r}: no socket given and SSH_AUTH_SOCK is not set",
                          hint="start an ssh agent, or pass --ssh ID=SOCKET")
    for one in path.split(","):
        if not os.path.exists(os.path.expanduser(one)):
            raise ConfigError(f"--ssh {item!r}: {one} does not exist")
